"""Timing of the Numba step-program executor on an LMU-like program (not a test).

    python bench/numba_kernels.py            # numba only
    python bench/numba_kernels.py --ort      # plus onnxruntime IOBinding on the same step graph
    python bench/numba_kernels.py --json out.json

Program: 6 inputs -> encoder dense 6->1 -> lmu_memory (d = 64, Legendre/ZOH over theta = 256)
-> concat [m; x] (70) -> dense 70->64 tanh. Prints microseconds per call of ``step`` (one sample
of S streams; median of individually timed calls and the mean of the best stream of calls) and
per stream-sample of ``block`` (one call for T samples of S streams), at S = 1, 64, 1024, and
the ratio to the FLOP floor (FLOPs / 101 GFLOP/s, the single-core sgemm peak measured for
docs/notes runtime-anchors; that note's LMU floor is 0.26 us).

Single-threaded; on a shared machine prefer the CPU-time columns (cpu) to wall time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

PEAK_FLOPS = 101e9          # single-core sgemm peak of the anchors' machine (FLOP/s)
ANCHOR_LMU_FLOOR_US = 0.260  # runtime-anchors: LMU d=64/hidden 64/6 inputs, FLOP floor
C, D, H = 6, 64, 64


def legendre_zoh(d, theta):
    """The zoo's Legendre delay system, ZOH-discretised, as float64 numpy arrays (A [d, d], B [d])."""
    from edge.models.lmu import legendre_delay, zoh
    A, B = zoh(*legendre_delay(d, theta))
    return A.numpy(), B.numpy()


def lmu_program(seed: int = 0):
    rng = np.random.default_rng(seed)
    A, B = legendre_zoh(D, 256.0)
    W = {"enc.w": rng.standard_normal((1, C)) / math.sqrt(C), "enc.b": np.zeros(1),
         "mem.A": A, "mem.B": B,
         "hid.w": rng.standard_normal((H, D + C)) / math.sqrt(D + C), "hid.b": rng.standard_normal(H) * 0.1}
    W = {k: np.asarray(v, np.float32) for k, v in W.items()}
    program = {"registers": {"x": C, "u": 1, "m": D, "cat": D + C, "y": H}, "output": "y", "ops": [
        {"op": "dense", "in": "x", "out": "u", "weight": "enc.w", "bias": "enc.b", "act": "identity"},
        {"op": "lmu_memory", "in": "u", "out": "m", "state_m": "0.m", "a": "mem.A", "b": "mem.B"},
        {"op": "concat", "ins": ["m", "x"], "out": "cat"},
        {"op": "dense", "in": "cat", "out": "y", "weight": "hid.w", "bias": "hid.b", "act": "tanh"}]}
    state = [{"name": "0.m", "shape": [1, D], "init": 0.0}]
    flops = 2 * (C * 1 + D * D + D + (D + C) * H) + 2 * 1 + H  # MACs x2, bias adds, + tanh as 1
    return program, W, state, flops


def timed_calls(fn, n: int):
    """Median of n individually timed calls (ns -> us), after a warm-up."""
    for _ in range(min(n, 200)):
        fn()
    ts = []
    pc = time.perf_counter_ns
    for _ in range(n):
        t0 = pc()
        fn()
        ts.append(pc() - t0)
    return statistics.median(ts) / 1e3


def stream_of_calls(fn, n: int, repeats: int = 5):
    """Best of `repeats` streams of n calls: (wall us/call, cpu us/call)."""
    fn()
    best_w = best_c = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        best_w = min(best_w, (time.perf_counter() - w0) / n)
        best_c = min(best_c, (time.process_time() - c0) / n)
    return best_w * 1e6, best_c * 1e6


def bench_numba(streams, quick: bool):
    from edge.engine.numba_engine import NumbaExecutor

    program, W, state, flops = lmu_program()
    t0 = time.perf_counter()
    ex = NumbaExecutor(program, W, state)
    build_s = time.perf_counter() - t0
    floor_us = flops / PEAK_FLOPS * 1e6
    rng = np.random.default_rng(1)
    rows = []
    for S in streams:
        st = ex.init_state(S)
        x = rng.standard_normal((S, C)).astype(np.float32)
        n_calls = max(50, (2000 if quick else 20000) // S)
        med = timed_calls(lambda: ex.step(x, st), n_calls)
        wall, cpu = stream_of_calls(lambda: ex.step(x, st), n_calls)
        T = max(4, (20_000 if quick else 200_000) // S)
        xb = rng.standard_normal((T, S, C)).astype(np.float32)
        bw, bc = stream_of_calls(lambda: ex.block(xb, st), 1, repeats=5 if quick else 11)
        rows.append({"streams": S, "step_median_us": med, "step_wall_us": wall, "step_cpu_us": cpu,
                     "step_per_stream_cpu_us": cpu / S, "block_T": T,
                     "block_us_per_stream_sample_wall": bw / (T * S),
                     "block_us_per_stream_sample_cpu": bc / (T * S)})
    return {"flops_per_step": flops, "flop_floor_us": floor_us, "build_s": build_s, "rows": rows,
            "executor": repr(ex)}


def build_onnx(program, W, path):
    """The same step as an ONNX graph (batch dynamic): x [B,6], state.0.m [B,1,64]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(W["enc.w"].T.copy(), "encT"), numpy_helper.from_array(W["enc.b"], "encb"),
            numpy_helper.from_array(W["mem.A"].T.copy(), "AT"), numpy_helper.from_array(W["mem.B"][None], "B1"),
            numpy_helper.from_array(W["hid.w"].T.copy(), "hidT"), numpy_helper.from_array(W["hid.b"], "hidb"),
            numpy_helper.from_array(np.array([-1, D], np.int64), "flat"),
            numpy_helper.from_array(np.array([-1, 1, D], np.int64), "unflat")]
    nodes = [
        helper.make_node("MatMul", ["x", "encT"], ["u0"]), helper.make_node("Add", ["u0", "encb"], ["u"]),
        helper.make_node("Reshape", ["state.0.m", "flat"], ["m0"]),
        helper.make_node("MatMul", ["m0", "AT"], ["mA"]),
        helper.make_node("MatMul", ["u", "B1"], ["uB"]),
        helper.make_node("Add", ["mA", "uB"], ["m1"]),
        helper.make_node("Reshape", ["m1", "unflat"], ["state.0.m.next"]),
        helper.make_node("Concat", ["m1", "x"], ["cat"], axis=1),
        helper.make_node("Gemm", ["cat", "hidT", "hidb"], ["h"]),
        helper.make_node("Tanh", ["h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "lmu_step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C]),
         helper.make_tensor_value_info("state.0.m", TensorProto.FLOAT, ["batch", 1, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", H]),
         helper.make_tensor_value_info("state.0.m.next", TensorProto.FLOAT, ["batch", 1, D])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def bench_ort(streams, quick: bool, workdir: str):
    import onnxruntime as ort

    program, W, state, _ = lmu_program()
    path = os.path.join(workdir, "lmu_step_bench.onnx")
    build_onnx(program, W, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    rows = []
    for S in streams:
        x = rng.standard_normal((S, C)).astype(np.float32)
        y = np.empty((S, H), np.float32)
        m = [np.zeros((S, 1, D), np.float32), np.zeros((S, 1, D), np.float32)]
        binds = []
        for k in range(2):  # ping-pong: call k reads m[k], writes m[1-k]
            b = sess.io_binding()
            b.bind_cpu_input("x", x)
            b.bind_cpu_input("state.0.m", m[k])
            b.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
            b.bind_output("state.0.m.next", "cpu", 0, np.float32, m[1 - k].shape, m[1 - k].ctypes.data)
            binds.append(b)
        flip = [0]

        def call():
            sess.run_with_iobinding(binds[flip[0]])
            flip[0] ^= 1

        n_calls = max(50, (2000 if quick else 20000) // S)
        med = timed_calls(call, n_calls)
        wall, cpu = stream_of_calls(call, n_calls)
        rows.append({"streams": S, "step_median_us": med, "step_wall_us": wall, "step_cpu_us": cpu,
                     "step_per_stream_cpu_us": cpu / S})
    # parity with numba over 1,000 steps, 3 streams
    from edge.engine.numba_engine import NumbaExecutor
    ex = NumbaExecutor(program, W, state)
    st = ex.init_state(3)
    m = np.zeros((3, 1, D), np.float32)
    err = 0.0
    for t in range(1000):
        x = rng.standard_normal((3, C)).astype(np.float32)
        yn = ex.step(x, st)
        yo, m = sess.run(None, {"x": x, "state.0.m": m})
        err = max(err, float(np.abs(yn - yo).max()))
    return {"rows": rows, "numba_vs_ort_max_abs_1000_steps": err, "ort_version": ort.__version__}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--ort", action="store_true", help="also time onnxruntime IOBinding (needs onnx)")
    ap.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    ap.add_argument("--json", help="write the numbers here as JSON")
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    args = ap.parse_args(argv)

    import numba
    import llvmlite.binding as llvm
    info = {"python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
            "cpu": llvm.get_host_cpu_name(), "machine": platform.machine(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}
    print("# " + json.dumps(info))
    res = {"info": info, "numba": bench_numba(args.streams, args.quick)}
    nb = res["numba"]
    print(f"# {nb['executor']}; build {nb['build_s']:.2f} s (compile or cache load); "
          f"{nb['flops_per_step']} FLOP/step, FLOP floor {nb['flop_floor_us']:.3f} us "
          f"(anchors' LMU floor {ANCHOR_LMU_FLOOR_US} us)")
    print(f"{'streams':>8} | {'step/call median':>16} {'step/call cpu':>14} {'per stream':>11} | "
          f"{'block/stream-sample cpu':>24} {'x floor':>8} {'x anchor':>9}")
    for r in nb["rows"]:
        b = r["block_us_per_stream_sample_cpu"]
        print(f"{r['streams']:>8} | {r['step_median_us']:>13.3f} us {r['step_cpu_us']:>11.3f} us "
              f"{r['step_per_stream_cpu_us']:>8.4f} us | {b:>21.4f} us {b / nb['flop_floor_us']:>7.2f}x "
              f"{b / ANCHOR_LMU_FLOOR_US:>8.2f}x")
    if args.ort:
        res["ort"] = bench_ort(args.streams, args.quick, args.workdir)
        print(f"# onnxruntime {res['ort']['ort_version']} IOBinding, 1 thread; numba vs ORT max |dy| over "
              f"1,000 steps: {res['ort']['numba_vs_ort_max_abs_1000_steps']:.2e}")
        for r, n in zip(res["ort"]["rows"], nb["rows"]):
            print(f"{r['streams']:>8} | ORT step/call median {r['step_median_us']:.3f} us, cpu "
                  f"{r['step_cpu_us']:.3f} us ({r['step_per_stream_cpu_us']:.4f}/stream); "
                  f"ORT / numba per call: {r['step_median_us'] / n['step_median_us']:.2f}x median, "
                  f"{r['step_cpu_us'] / n['step_cpu_us']:.2f}x cpu")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
