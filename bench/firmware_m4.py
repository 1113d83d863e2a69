"""The exported int8 steps on a Cortex-M4 under QEMU: exact flash and RAM from the linker map,
instructions per step (-icount), bit-exactness against the Python integer reference, and
`edge fit`'s Cortex-M4F estimate beside the measured count.

    python bench/firmware_m4.py          # ~1.5 min: imu-attitude, bench-lmu, har-watch, ett-forecast

The Cortex-M4F profile's cycles_per_mac and cycles_per_op are solved from the first two rows
(firmware_sim/profiles.toml); har-watch and ett-forecast are out of that sample.

bench/bundles/ is made by `python bench/make_bench_bundles.py` (not versioned).
"""
import tempfile
from pathlib import Path

import numpy as np

from edge.bundle import read_bundle
from edge.firmware_sim.export_c import export_c
from edge.firmware_sim.fit import budget, bundle_counts, load_profiles
from edge.firmware_sim.intarith import IntExecutor, calibrate, load_int8, normalised
from edge.firmware_sim.qemu import build_m4, run_qemu, tool_missing
from edge.io.recordings import read_recording
from edge.io.datasets import broad_root
from edge.io.channels import select_inputs

ROOT = Path(__file__).resolve().parents[1]


def cases():
    imu = load_int8("imu-attitude")
    x = select_inputs(read_recording(broad_root() / "03_undisturbed_slow_rotation_C.npz"), imu.meta, "imu")
    yield "imu-attitude", imu.bundle, imu.executor, normalised(imu.meta, x[:1000])
    lmu = read_bundle(ROOT / "bench" / "bundles" / "lmu.onnx")
    walk = np.cumsum(np.random.default_rng(0).normal(0, 0.1, (4000, 6)), axis=0).astype(np.float32)
    yield "bench-lmu", lmu, IntExecutor(calibrate(lmu.meta, lmu.weights, walk[:3000])), walk[3000:]
    from edge.tasks.classify.data import load_watch
    data = load_watch()
    har = load_int8("har-watch")                          # calibrated on its training subjects
    held = np.isin(data.subject, har.meta["metrics"]["held_out_subjects"])
    test = np.concatenate(data.subset(np.flatnonzero(held)).x)
    yield "har-watch", har.bundle, har.executor, normalised(har.meta, test[:1000])
    from edge.tasks.forecast.ett import load_ett
    ett = load_ett("ETTh1", "multivariate")
    model = load_int8("ett-forecast")                     # calibrated on the train split
    test = ett.values[slice(*ett.borders["test"])][:200].astype(np.float32)
    yield "ett-forecast", model.bundle, model.executor, normalised(model.meta, test)


def main():
    missing = tool_missing()
    if missing:
        raise SystemExit(f"bench/firmware_m4.py: {missing}")
    p = load_profiles()
    m4 = p["devices"]["cortex-m4f"]
    print("bundle         flash B  (weights)    RAM B  (step stack)  instr/step  fit cycles  fit/QEMU  bit-exact")
    for name, bundle, ex, x in cases():
        with tempfile.TemporaryDirectory() as d:
            export_c(ex.plan, d, name)
            s = build_m4(d)
            q = run_qemu(d, x, ex.output_size)
        ref = ex.block(x[:, None, :], ex.init_state(1))[:, 0]
        exact = np.array_equal(q["y"].view(np.uint32), ref.view(np.uint32))
        est = budget(bundle_counts(bundle), m4, p["energy"])["cycles"]
        ram = s["data"] + s["bss"] + s["step_stack"]
        print(f"{name:<13} {s['flash']:>8,}  ({s['weights']:>7,})  {ram:>7,}  ({s['step_stack']:>6,})  "
              f"{q['instructions_per_step']:>10,.0f}  {est:>10,.0f}  {est / q['instructions_per_step']:>8.2f}  "
              f"{'yes' if exact else 'NO'} ({len(x)} steps)")
    print("RAM = .data + .bss (harness buffers and one model_state_t) + model_step's stack frame (-fstack-usage); "
          "instructions: SysTick under qemu-system-arm -icount shift=0, 40 instructions per tick")


if __name__ == "__main__":
    main()
