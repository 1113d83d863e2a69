"""Accumulators stay exact on long streams: `running_mean` after 2^25 samples equals a float64
mean computed here (numpy cumsum) within 1e-6, on the Numba engine, in the torch program (what
the ONNX graph runs) and, within its quantisation step, in the integer reference; and its sample
count still counts past 2^32."""
from __future__ import annotations

import numpy as np
import pytest

from edge.engine.numba_engine import NumbaExecutor

C = 3
BLOCK = 1 << 20
BLOCKS = 32                      # 2^25 samples: a float32 count stops at 2^24
OFFSET = np.array([0.2975, -1.5, 3.0])  # a class probability, a negative mean, a larger one

PROGRAM = {"registers": {"x": C, "r1": C}, "output": "r1",
           "ops": [{"op": "running_mean", "in": "x", "out": "r1", "state_sum": "sum", "state_count": "count"}]}
STATE = [{"name": "sum", "shape": [2, C], "init": 0.0}, {"name": "count", "shape": [2], "init": 0.0}]


def blocks(seed=0):
    """BLOCKS blocks [BLOCK, 1, C] float32 of uniform noise around OFFSET."""
    rng = np.random.default_rng(seed)
    for _ in range(BLOCKS):
        yield (OFFSET + rng.uniform(-0.5, 0.5, (BLOCK, 1, C))).astype(np.float32)


def check_long_stream(run_block, tolerance):
    """Feed 2^25 samples block by block; every output against the float64 cumulative mean."""
    total = np.zeros(C)
    seen = 0
    worst = 0.0
    for x in blocks():
        y = run_block(x)[:, 0, :].astype(np.float64)
        csum = total + np.cumsum(x[:, 0, :].astype(np.float64), axis=0)
        ref = csum / (seen + np.arange(1, len(x) + 1))[:, None]
        worst = max(worst, float(np.abs(y - ref).max()))
        total, seen = csum[-1], seen + len(x)
    assert seen == 1 << 25
    assert worst <= tolerance, f"running mean off by {worst:.3g} after {seen} samples"


def test_numba_running_mean_exact_after_2_25_samples():
    ex = NumbaExecutor(PROGRAM, {}, STATE)
    state = ex.init_state(1)
    check_long_stream(lambda x: ex.block(x, state), 1e-6)
    count = state[0, 2 * C:].astype(np.float64).sum()
    assert count == 1 << 25


def pair(v: float) -> tuple[np.float32, np.float32]:
    hi = np.float32(v)
    return hi, np.float32(v - np.float64(hi))


def test_numba_count_goes_on_past_2_32():
    ex = NumbaExecutor(PROGRAM, {}, STATE)
    state = ex.init_state(1)
    n = 2 ** 32 - 3
    means = np.array([0.25, -2.0, 7.0])
    for c in range(C):
        state[0, c], state[0, C + c] = pair(means[c] * n)
    state[0, 2 * C], state[0, 2 * C + 1] = pair(n)
    x = np.full((8, 1, C), 1000.0, np.float32)
    y = ex.block(x, state).copy()
    assert state[0, 2 * C:].astype(np.float64).sum() == n + 8   # exact: a float32 count is stuck at 2^32
    k = np.arange(1, 9)[:, None]
    ref = (means * n + 1000.0 * k) / (n + k)
    assert np.allclose(y[:, 0, :], ref, rtol=0, atol=1e-6)
    assert np.all(np.diff(y[:, 0, 0]) > 0)                       # every sample moves the mean


def test_torch_program_equals_numba_bit_for_bit():
    torch = pytest.importorskip("torch")
    from edge.export.program_torch import ProgramModule
    module = ProgramModule(PROGRAM, {}, STATE)
    ex = NumbaExecutor(PROGRAM, {}, STATE)
    state = ex.init_state(2)
    n = 2 ** 32 + 5
    state[0, 0], state[0, C] = pair(0.125 * n)
    state[1, 2], state[1, C + 2] = pair(-3.0 * n)
    state[:, 2 * C], state[:, 2 * C + 1] = pair(n)
    x = np.random.default_rng(1).standard_normal((50, 2, C)).astype(np.float32)
    s, cnt = torch.from_numpy(state[:, :2 * C].reshape(2, 2, C).copy()), torch.from_numpy(state[:, 2 * C:].copy())
    ys = []
    with torch.no_grad():
        for t in range(len(x)):
            y, s, cnt = module(torch.from_numpy(x[t]), s, cnt)
            ys.append(y.numpy())
    y_numba = ex.block(x, state)
    assert np.array_equal(np.stack(ys), y_numba)
    assert np.array_equal(s.numpy().reshape(2, -1), state[:, :2 * C])
    assert np.array_equal(cnt.numpy(), state[:, 2 * C:])


def test_int_reference_running_mean_exact_after_2_25_samples():
    from edge.firmware_sim.intarith import calibrate, run_plan
    meta = {"program": PROGRAM, "state": STATE}
    calib = next(blocks(seed=7))[:4096, 0, :]
    plan = calibrate(meta, {}, calib)
    f_in = plan.formats["x@q"]
    f_out = plan.formats["r1"]
    state = np.tile(plan.state_init, (1, 1))
    # the input's and the output's quantisation steps bound the integer mean's error
    check_long_stream(lambda x: run_plan(plan, x, state), 2.0 ** -f_in + 2.0 ** -f_out)

    words = state[0].view(np.int32).astype(np.int64)
    off, _ = plan.int_states["count"]
    assert words[off + 1] * 2 ** 32 + (words[off] & 0xFFFFFFFF) == 1 << 25


def test_int_reference_count_goes_on_past_2_32():
    from edge.firmware_sim.intarith import calibrate, run_plan
    plan = calibrate({"program": PROGRAM, "state": STATE}, {}, next(blocks(seed=7))[:4096, 0, :])
    state = np.tile(plan.state_init, (1, 1))
    words = state[0].view(np.int32)
    off, _ = plan.int_states["count"]
    n = 2 ** 32 - 2
    words[off], words[off + 1] = np.int64(n & 0xFFFFFFFF).astype(np.int32), n >> 32
    run_plan(plan, np.zeros((6, 1, C), np.float32), state)
    w = words.astype(np.int64)
    assert w[off + 1] * 2 ** 32 + (w[off] & 0xFFFFFFFF) == n + 6
