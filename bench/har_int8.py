"""HAR bundles in fp32 and in the integer reference, side by side: full-length accuracy on the
held-out watch subjects each bundle names, spikes per step, MACs and accumulates per step from the
ONNX graph, and energy per inference on the Cortex-M4F profile (`edge fit`'s arithmetic).

    python bench/har_int8.py                                  # the shipped har-watch (+ -spiking if shipped)
    python bench/har_int8.py runs/a.onnx runs/b.onnx          # e.g. a spiking and a non-spiking LMUFormer
    python bench/har_int8.py --qemu ...                       # also: the C step on a Cortex-M4 under QEMU

The integer step is calibrated on the bundle's *training* subjects (never the held-out ones).
"""
import argparse
import tempfile

import numpy as np

from edge.bundle import BUNDLE_DIR, read_bundle
from edge.firmware_sim.fit import budget, bundle_counts, load_profiles, measured_spike_rates, spiking_weights
from edge.firmware_sim.export_c import export_c
from edge.firmware_sim.intarith import load_int8, normalised
from edge.firmware_sim.qemu import build_m4, run_qemu
from edge.runtime import load
from edge.tasks.classify.data import load_watch
from edge.tasks.classify.evaluate import SHIPPED, stream_probabilities


def accuracy(model, data) -> float:
    return float(np.mean([p[-1].argmax() == y for p, y in zip(stream_probabilities(model, data), data.y)]))


def on_cortex_m4(model, x) -> str:
    """Flash, instructions per step and bit-exactness of the exported C step under QEMU."""
    ex = model.executor
    with tempfile.TemporaryDirectory() as d:
        export_c(ex.plan, d, "har")
        sizes = build_m4(d)
        q = run_qemu(d, x, ex.output_size)
    exact = np.array_equal(q["y"].view(np.uint32), ex.block(x[:, None, :], ex.init_state(1))[:, 0].view(np.uint32))
    return (f"flash {sizes['flash']:,} B, RAM {sizes['data'] + sizes['bss'] + sizes['step_stack']:,} B, "
            f"{q['instructions_per_step']:,.0f} instructions per step (QEMU), bit-exact: {exact}")


def main(paths, qemu=False):
    data = load_watch()
    profiles = load_profiles()
    m4 = profiles["devices"]["cortex-m4f"]
    print("bundle                  fp32 acc  int8 acc  spikes/neuron/step  MACs/step  ACs/step  "
          "energy fp32 nJ  energy int8 nJ  M4 µs/step (int8)")
    for path in paths:
        b = read_bundle(path)
        held = np.isin(data.subject, b.meta["metrics"]["held_out_subjects"])
        test = data.subset(np.flatnonzero(held))
        fp32 = accuracy(load(path, engine="numba"), test)
        int8_model = load_int8(path)                # calibrated on the training subjects
        int8 = accuracy(int8_model, test)
        rates = measured_spike_rates(b, np.concatenate(test.x)) if spiking_weights(b.meta["program"]) else None
        c = bundle_counts(b, rates)
        e = {a: budget(c, m4, profiles["energy"], a) for a in ("fp32", "int8")}
        regs = b.meta["program"]["registers"]
        lif = {i: regs[op["out"]] for i, op in enumerate(b.meta["program"]["ops"]) if op["op"] == "lif"}
        rate = sum(rates[i] * n for i, n in lif.items()) / sum(lif.values()) if rates else None
        print(f"{b.meta.get('name') or path:<22}  {100 * fp32:7.1f}%  {100 * int8:7.1f}%  "
              f"{'-' if rate is None else f'{rate:.3f}':>18}  {c['macs']:>9,}  {c['acs']:>8,.0f}  "
              f"{e['fp32']['energy_arith_nj']:>14.1f}  {e['int8']['energy_arith_nj']:>14.1f}  "
              f"{e['int8']['us_per_step']:>10.0f}")
        if qemu:
            x = normalised(b.meta, np.concatenate(test.x)[:500])
            print(f"{'':<22}  cortex-m4: {on_cortex_m4(int8_model, x)}; edge fit: {e['int8']['cycles']:,.0f} cycles")
    print(f"held-out recordings: {int(held.sum())}; energy: Horowitz 2014 45 nm (fp32 MAC 4.6 pJ, AC 0.9 pJ; "
          "int8 MAC 0.3 pJ, AC 0.1 pJ), arithmetic only")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*", help="default: the shipped HAR bundles")
    ap.add_argument("--qemu", action="store_true", help="also run the C step on a Cortex-M4 under qemu-system-arm")
    args = ap.parse_args()
    main(args.bundles or [p for p in (BUNDLE_DIR / f"{n}.onnx" for n in SHIPPED) if p.exists()], args.qemu)
