"""One loaded model shared by threads: each thread with its own state gets, bit for bit, what the
same work gives when done sequentially (the Numba runner releases the GIL, so threads really run
at the same time inside it)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import edge

THREADS, CALLS, SAMPLES, STREAMS = 4, 80, 50, 4


def _inputs(model, seed):
    """CALLS blocks [SAMPLES, STREAMS, C] of one thread, around the bundle's own input scale."""
    rng = np.random.default_rng(seed)
    norm = model.meta.get("normalisation") or {}
    mean = np.asarray(norm.get("mean", 0.0), np.float32)
    std = np.asarray(norm.get("std", 1.0), np.float32)
    return [(mean + std * rng.standard_normal((SAMPLES, STREAMS, model.input_size))).astype(np.float32)
            for _ in range(CALLS)]


def _work(model, blocks):
    state = model.init_state(STREAMS)
    return np.stack([model.block(x, state).copy() for x in blocks]), state


@pytest.mark.parametrize("name,engine", [("imu-attitude", "numba"), ("har-watch", "numba"),
                                         ("imu-attitude", "onnxruntime"), ("har-watch", "onnxruntime")])
def test_threads_share_a_model(name, engine):
    model = edge.load(name, engine=engine)
    assert model.engine == engine
    work = [_inputs(model, seed) for seed in range(THREADS)]
    sequential = [_work(model, blocks) for blocks in work]

    results = [None] * THREADS
    errors = []
    start = threading.Barrier(THREADS)

    def run(i):
        try:
            start.wait()
            results[i] = _work(model, work[i])
        except Exception as e:  # noqa: BLE001 - reported below, with the thread's number
            errors.append((i, e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, ((y_seq, s_seq), (y_par, s_par)) in enumerate(zip(sequential, results)):
        assert np.array_equal(y_par, y_seq, equal_nan=True), f"thread {i}: outputs differ from the sequential run"
        assert np.array_equal(s_par, s_seq, equal_nan=True), f"thread {i}: final state differs"
