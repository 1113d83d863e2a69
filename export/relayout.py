"""Re-export a bundle written before the exact running mean, from the bundle itself.

    python -m edge.export.relayout edge/bundles/har-watch.onnx [--out NEW.onnx]

Older exports keep a `running_mean`'s sum as float32 [n] and its count as float32 [1], which stop
growing after 2^24 samples (a day at 200 Hz). The current layout keeps each as a float32 hi + lo
pair, [2, n] and [2] (docs/bundle.md). This rewrites the state spec, writes the step graph again
from the bundle's own program and weights (export/program_torch.py), keeps every other metadata
field, and checks, before writing, that the new bundle on Numba and on onnxruntime gives the old
graph's outputs over 2,000 steps within float32 rounding. Deterministic: the same input gives the
same file.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import onnx

from edge.bundle import read_bundle, write_metadata
from edge.export.bundle_export import onnx_step_graph
from edge.io.atomic import atomic_write

PARITY_STEPS = 2000
TOLERANCE = 1e-5


def relaid_state(meta: dict) -> list | None:
    """The state spec with every old-layout running_mean sum/count widened, or None if none is old."""
    state = copy.deepcopy(meta["state"])
    by_name = {s["name"]: s for s in state}
    changed = False
    for op in meta["program"]["ops"]:
        if op["op"] != "running_mean":
            continue
        total, count = by_name[op["state_sum"]], by_name[op["state_count"]]
        if len(total["shape"]) == 1 and count["shape"] == [1]:
            total["shape"], count["shape"] = [2, *total["shape"]], [2]
            changed = True
    return state if changed else None


def relayout(path, out=None) -> bool:
    """Rewrite the bundle at `path` (to `out`, or in place); False when it needs nothing."""
    from edge.engine.numba_engine import NumbaExecutor
    from edge.engine.ort_engine import OrtExecutor
    bundle = read_bundle(path)
    meta = copy.deepcopy(bundle.meta)
    state = relaid_state(meta)
    if state is None:
        return False
    meta["state"] = state
    meta.setdefault("provenance", {})["relaid"] = "running_mean sum/count as float32 hi+lo pairs (export/relayout.py)"
    proto = onnx_step_graph(meta["program"], bundle.weights, state, bundle.input_size)
    write_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((PARITY_STEPS, 2, bundle.input_size)).astype(np.float32)  # normalised inputs
    old = OrtExecutor(bundle.model_bytes, bundle.meta["state"])
    reference = old.block(x, old.init_state(2))
    for ex in (NumbaExecutor(meta["program"], bundle.weights, state), OrtExecutor(data, state)):
        err = float(np.abs(ex.block(x, ex.init_state(2)) - reference).max())
        if err > TOLERANCE * max(1.0, float(np.abs(reference).max())):
            raise ValueError(f"{path}: the re-exported bundle on {ex.name} differs from the old graph by {err:.3g}")
    atomic_write(out or path, data)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", help="bundle files (.onnx)")
    ap.add_argument("--out", help="write here instead of in place (one bundle only)")
    args = ap.parse_args(argv)
    if args.out and len(args.bundles) != 1:
        ap.error("--out takes one bundle")
    for path in args.bundles:
        print(f"{path}: {'re-exported' if relayout(path, args.out) else 'already current'}")


if __name__ == "__main__":
    main()
