"""The LMU's linear memory in fixed point: how the integer error grows with time for each state
word width and Ā width. Ā has eigenvalues near 1, so a rounding error made at one step decays
only over ~θ steps and errors made every step pile up; this measures it on real data.

    python bench/lmu_state_format.py      # ~1 min: bench/bundles/lmu.onnx on ETTh1 (6 load channels)

Prints, per (state bits, Ā bits), over each quarter of the 8,000-step stream: the max error of the
memory m itself (integer state vs the float engine's, relative to max |m|) and of the output y
(relative to its range), and the memory's fractional bits the calibration chose.

bench/bundles/ is made by `python bench/make_bench_bundles.py` (not versioned).
"""
import csv
from pathlib import Path

import numpy as np

from edge.bundle import read_bundle
from edge.firmware_sim import intarith_kernels as K
from edge.firmware_sim.intarith import frac_bits
from edge.firmware_sim.intarith import IntExecutor, calibrate
from edge.runtime import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
BUNDLE = Path(__file__).with_name("bundles") / "lmu.onnx"


def ett_inputs():
    rows = list(csv.reader(open(DATA)))[1:]
    x = np.array([[float(v) for v in r[1:7]] for r in rows], np.float64)
    train = x[:8640]
    return ((x - train.mean(0)) / train.std(0)).astype(np.float32)


def memory_alone(A, B, u, state_bits, a_bits):
    """The memory by itself, driven by the same Q12 input in float64 and in the integer kernel:
    max |Δm| / max |m| per quarter."""
    d = A.shape[0]
    fu = 12
    uq = np.round(u * 2 ** fu).astype(np.int32)
    lim = 2 ** (a_bits - 1) - 1
    fa, fb = frac_bits(np.abs(A).max(), lim, 1.0, 0, 30), frac_bits(np.abs(B).max(), lim, 1.0, 0, 30)
    W16 = np.concatenate([np.round(A * 2.0 ** fa).ravel(), np.round(B * 2.0 ** fb)]).astype(np.int16)
    m = np.zeros(d)
    ms = []
    for v in uq / 2.0 ** fu:
        m = A @ m + v * B
        ms.append(m)
    ms = np.array(ms)
    fm = frac_bits(np.abs(ms).max(), 2 ** (state_bits - 1) - 1, 4.0, 0, 30)
    wsi, si = np.zeros(2 + 2 * d, np.int32), np.zeros(d, np.int32)
    err = np.empty(len(u))
    for t in range(len(u)):
        wsi[0] = uq[t]
        K.lmumem(wsi, si, W16, 0, 2, 1, d, 0, fa, d * d, fu + fb - fm, 0, 2 ** (state_bits - 1) - 1, fm - 12,
                 2 + d, 32767)
        err[t] = np.abs(si / 2.0 ** fm - ms[t]).max()
    return fm, [q.max() / np.abs(ms).max() for q in np.array_split(err, 4)]


def main():
    x = ett_inputs()
    b = read_bundle(BUNDLE)
    ref_model = load(BUNDLE, engine="numba")
    test = x[8640:8640 + 8000]
    name, off, shape = ref_model.executor.state_layout[0]     # the memory: the bundle's only state
    n = int(np.prod(shape))
    st = ref_model.init_state(1)
    ref, mref = np.empty(len(test), np.float32), np.empty((len(test), n), np.float32)
    for t in range(len(test)):
        ref[t] = ref_model.step(test[t:t + 1], st)[0, 0]
        mref[t] = st[0, off:off + n]
    span, mspan = float(ref.max() - ref.min()), float(np.abs(mref).max())
    print(f"{BUNDLE.name} on ETTh1 (calibrated on the 8,640 training rows, run on the next 8,000); "
          f"output range {span:.3f}")
    print("state bits  Ā bits  memory  max |Δm|/max|m| by quarter          max |Δy|/range by quarter")
    for state_bits in (16, 24, 32):
        for a_bits in (8, 12, 16):
            plan = calibrate(b.meta, b.weights, x[:8640], state_bits=state_bits, a_bits=a_bits)
            ex = IntExecutor(plan)
            moff, _ = plan.int_states[name]
            fm = plan.formats["state:" + name]
            st = ex.init_state(1)
            y, m = np.empty(len(test), np.float32), np.empty((len(test), n))
            for t in range(len(test)):
                y[t] = ex.step(test[t:t + 1], st)[0, 0]
                m[t] = st[0].view(np.int32)[moff:moff + n] / 2.0 ** fm

            def quarters(err):
                return "  ".join(f"{q.max():.1e}" for q in np.array_split(err, 4))
            print(f"{state_bits:>10}  {a_bits:>6}  Q{fm:<5} {quarters(np.abs(m - mref).max(1) / mspan)}   "
                  f"{quarters(np.abs(y - ref) / span)}")
    from edge.models.lmu import legendre_delay, zoh   # the zoo's Legendre system (needs torch)
    for d, theta in ((32, 128.0), (64, 1024.0)):
        A, B = (np.asarray(v, np.float64) for v in zoh(*legendre_delay(d, theta)))
        B = B.ravel()
        print(f"\nthe memory alone: d={d}, θ={theta:g} (|eig Ā| max {np.abs(np.linalg.eigvals(A)).max():.6f}), driven "
              "by ETTh1 OT in Q12 in float64 and in integers: max |Δm|/max|m| by quarter")
        for state_bits in (16, 24, 32):
            for a_bits in (8, 12, 16):
                fm, q = memory_alone(A, B, test[:, 5], state_bits, a_bits)
                print(f"{state_bits:>10}  {a_bits:>6}  Q{fm:<5} " + "  ".join(f"{v:.1e}" for v in q))


if __name__ == "__main__":
    main()
