"""torch model -> bundle: lower to a step program, write it as an ONNX step graph through torch's
exporter, attach the metadata document, check it, and prove parity (torch step vs onnxruntime
vs Numba) before the file is written."""
import datetime
import io
import platform

import numpy as np
import onnx
import torch

import edge
from edge.bundle import SCHEMA, state_input, state_output, write_metadata
from edge.export.lower import ExportError, lower
from edge.export.program_torch import ProgramModule
from edge.io.atomic import atomic_write


def _channels(names, n, prefix):
    if names is None:
        return [{"name": f"{prefix}{i}", "unit": ""} for i in range(n)]
    if len(names) != n:
        raise ExportError(f"{len(names)} {prefix} names given for {n} channels")
    return [{"name": c, "unit": ""} if isinstance(c, str) else dict(c) for c in names]


def onnx_step_graph(program, weights, state_spec, input_size: int, opset: int = 17):
    module = ProgramModule(program, weights, state_spec).eval()
    names = [s["name"] for s in state_spec]
    x = torch.zeros(2, input_size)
    states = tuple(torch.zeros(2, *s["shape"]) for s in state_spec)
    in_names = ["x"] + [state_input(n) for n in names]
    out_names = ["y"] + [state_output(n) for n in names]
    buf = io.BytesIO()
    # The TorchScript exporter keeps buffer names as initializer names; constant folding is off so
    # that no weight is renamed (onnxruntime folds the transposes itself when it loads the graph).
    torch.onnx.export(module, (x, *states), buf, dynamo=False, opset_version=opset,
                      input_names=in_names, output_names=out_names, do_constant_folding=False,
                      dynamic_axes={n: {0: "batch"} for n in in_names + out_names})
    proto = onnx.load_from_string(buf.getvalue())
    # The exporter leaves the state outputs' shapes unknown: state them, so a reader can check them.
    shapes = {"y": [program["registers"][program["output"]]],
              **{state_output(s["name"]): s["shape"] for s in state_spec}}
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = "batch"
        for d in shapes[out.name]:
            dims.add().dim_value = int(d)
    return proto


def torch_stream(model, x: np.ndarray) -> np.ndarray:
    """Reference outputs of the torch model's streaming face over x (T, S, C) -> (T, S, O).

    One thread: intra-op threads only add contention on per-sample-sized ops."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            state = model.init_state(x.shape[1])
            ys = []
            for t in range(x.shape[0]):
                y, state = model.step(torch.from_numpy(x[t]), state)
                ys.append(y.numpy().copy())
    finally:
        torch.set_num_threads(threads)
    return np.stack(ys)


def export_bundle(model, path, *, input_size: int, task: str = "sequence", name: str | None = None,
                  inputs=None, outputs=None, sample_rate_hz=None, normalisation=None, config=None,
                  provenance=None, metrics=None, parity_steps: int = 1000, parity_input=None,
                  tolerance: float = 1e-4) -> dict:
    """Write `model` (a zoo model in eval mode) as a bundle at `path`; returns the metadata.

    Parity runs `parity_steps` steps of `parity_input` (T, S, C) or of a random stream through the
    torch step, onnxruntime and Numba; export refuses when the max abs error exceeds
    tolerance · max(1, |y|), or spikes differ."""
    from edge.engine.numba_engine import NumbaExecutor, UnsupportedOp
    from edge.engine.ort_engine import OrtExecutor
    model = model.eval()
    program, weights, state_spec = lower(model, input_size)
    out_size = program["registers"][program["output"]]
    proto = onnx_step_graph(program, weights, state_spec, input_size)
    meta = {
        "schema": SCHEMA,
        "task": task,
        "name": name,
        "inputs": _channels(inputs, input_size, "x"),
        "outputs": _channels(outputs, out_size, "y"),
        "sample_rate_hz": sample_rate_hz,
        "normalisation": normalisation,
        "state": state_spec,
        "model": {"class": type(model).__name__, "cells": sorted({op["op"] for op in program["ops"]}),
                  "config": config or {}},
        "program": program,
        "provenance": {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "edge_version": edge.__version__, "torch": torch.__version__,
                       "python": platform.python_version(), **(provenance or {})},
        "metrics": metrics or {},
    }
    missing = sorted(set(weights) - {t.name for t in proto.graph.initializer})
    if missing:
        raise ExportError(f"the exporter renamed or dropped weights {missing[:5]}: the Numba engine could not find them")
    write_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)

    if parity_input is None:
        parity_input = np.random.default_rng(0).standard_normal((parity_steps, 2, input_size)).astype(np.float32)
    parity_input = np.ascontiguousarray(parity_input[:parity_steps], dtype=np.float32)
    reference = torch_stream(model, parity_input)
    scale = max(1.0, float(np.abs(reference).max()))
    parity = {"steps": int(parity_input.shape[0]), "streams": int(parity_input.shape[1])}
    data = proto.SerializeToString()
    executors = [("onnxruntime", lambda: OrtExecutor(data, state_spec))]
    executors.append(("numba", lambda: NumbaExecutor(program, weights, state_spec)))
    for label, make in executors:
        try:
            ex = make()
        except UnsupportedOp as e:
            parity[f"{label}_max_abs"] = None
            parity[f"{label}_note"] = str(e)
            continue
        y = ex.block(parity_input, ex.init_state(parity_input.shape[1]))
        err = float(np.abs(y - reference).max())
        parity[f"{label}_max_abs"] = err
        if err > tolerance * scale:
            raise ExportError(f"parity failed: {label} differs from the torch step by {err:.3g} "
                              f"(limit {tolerance * scale:.3g}) over {parity['steps']} steps")
    meta["parity"] = parity
    write_metadata(proto, meta)
    atomic_write(path, proto.SerializeToString())
    return meta
