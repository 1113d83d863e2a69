"""Threads sharing one loaded model: per-thread workspaces (what the executors do) against one lock
around every call (the alternative), and against the same work done on one thread.

    python bench/engine_threads.py                          # imu-attitude and har-watch, 4 threads
    python bench/engine_threads.py --threads 2 --calls 200 --engine onnxruntime

Each thread advances its own state by --calls blocks of --samples x --streams. The table gives the
wall time of each way and its speed-up over the sequential run (same work, one thread). Best of
--repeats runs after a warm-up.
"""
import argparse
import threading
import time

import numpy as np

import edge


def run_threads(model, blocks_per_thread, lock=None):
    start = threading.Barrier(len(blocks_per_thread))

    def work(blocks):
        state = model.init_state(blocks[0].shape[1])
        start.wait()
        for x in blocks:
            if lock is None:
                model.block(x, state)
            else:
                with lock:
                    model.block(x, state)

    threads = [threading.Thread(target=work, args=(b,)) for b in blocks_per_thread]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run_sequential(model, blocks_per_thread):
    t0 = time.perf_counter()
    for blocks in blocks_per_thread:
        state = model.init_state(blocks[0].shape[1])
        for x in blocks:
            model.block(x, state)
    return time.perf_counter() - t0


def best(fn, repeats):
    fn()  # warm-up: compiles, allocates each thread's buffers once
    return min(fn() for _ in range(repeats))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["imu-attitude", "har-watch"])
    ap.add_argument("--engine", default="numba", choices=["numba", "onnxruntime"])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--calls", type=int, default=80)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"{args.threads} threads x {args.calls} blocks of {args.samples} samples x {args.streams} streams, "
          f"engine {args.engine}, best of {args.repeats}")
    print(f"{'model':<14}{'sequential s':>14}{'per-thread s':>14}{'x':>7}{'one lock s':>12}{'x':>7}")
    for name in args.models:
        model = edge.load(name, engine=args.engine)
        rng = np.random.default_rng(0)
        blocks = [[rng.standard_normal((args.samples, args.streams, model.input_size)).astype(np.float32)
                   for _ in range(args.calls)] for _ in range(args.threads)]
        seq = best(lambda: run_sequential(model, blocks), args.repeats)
        own = best(lambda: run_threads(model, blocks), args.repeats)
        lock = threading.Lock()
        locked = best(lambda: run_threads(model, blocks, lock), args.repeats)
        print(f"{name:<14}{seq:>14.3f}{own:>14.3f}{seq / own:>7.2f}{locked:>12.3f}{seq / locked:>7.2f}")


if __name__ == "__main__":
    main()
