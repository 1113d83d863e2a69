"""`edge bench BUNDLE`: how fast one bundle streams on every engine, and how far that is from the
arithmetic floor, all measured in the same run.

What is measured (µs per stream-sample; the median over --repeats timed repeats after a warm-up):

* torch eager: `edge.export.program_torch.ProgramModule` built from the bundle's program and weights,
  one call per sample, 1 thread, no_grad, the returned state fed back (only if torch is importable).
* ORT session.run: plain `InferenceSession.run` with numpy feeds, the state outputs fed back.
* ORT IOBinding: `OrtExecutor.step` (pre-bound ping-pong buffers).
* Numba per call: `NumbaExecutor.step`, one call per sample.
* Numba block: `NumbaExecutor.block`, T samples in one call.

The first two run at 1 stream; the last three at every `--streams` count (S streams per call; the
µs are per stream-sample, i.e. per call / S, or per call / (T·S) for the block).

Start-up is timed in fresh processes (`import edge` + `edge.load` + the first step), twice per
engine by default: the Numba kernels are compiled with `cache=True`, so the first process may pay the
JIT compile (a cache miss) and the next one loads the cache; the table says which happened.

The FLOP floor is the step's FLOPs (`edge.cost.step_cost`) divided by the single-core float32 GEMM
peak measured with numpy (best of several 1024³ and 2048³ products, by CPU time, so that other jobs on
shared cores do not lower it) in a child process pinned to one BLAS thread.

Times are wall-clock by default; `--clock cpu` uses this process's CPU time instead (both are
reported), the better estimate of the cost on an idle core when other jobs share the machine.
Nothing here imports numpy before a measurement starts, nor torch unless the torch row is measured.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

from edge.argtypes import integer, positive_float

_positive_int, _nonnegative_int, _positive_float = integer(1), integer(0), positive_float

ENGINES = ("torch", "onnxruntime", "numba")
DEFAULT_STREAMS = "1,64,1024"
TARGETS = (
    # key, what, op, target (the values are computed in _targets)
    ("numba_step_vs_iobinding_1", "Numba per call vs ORT IOBinding, 1 stream (speed-up)", ">=", 2.5),
    ("numba_block_vs_floor_1", "Numba block / FLOP floor, 1 stream", "<=", 4.0),
    ("numba_block_vs_floor_1024", "Numba block / FLOP floor, 1,024 streams", "<=", 2.0),
)
METHODS = {
    # key: (label, engine, stream counts: "one" = 1 stream only, "all" = every --streams count)
    "torch_eager": ("torch eager, 1 thread (per call)", "torch", "one"),
    "ort_run": ("ORT session.run (per call)", "onnxruntime", "one"),
    "ort_iobinding": ("ORT IOBinding (OrtExecutor.step)", "onnxruntime", "all"),
    "numba_step": ("Numba per call (NumbaExecutor.step)", "numba", "all"),
    "numba_block": ("Numba block (NumbaExecutor.block)", "numba", "all"),
}
MIN_CALLS = 32  # timed calls (or block length) per repeat, at least, whatever the stream count





def _streams(text):
    try:
        vals = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise _arg_error(f"{text!r}: expected comma-separated stream counts, e.g. 1,64,1024") from None
    if not vals or any(v < 1 for v in vals):
        raise _arg_error(f"{text!r}: expected stream counts of at least 1, e.g. 1,64,1024")
    return sorted(set(vals))


def _engines(text):
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    if names == ["all"]:
        return list(ENGINES)
    alias = {"ort": "onnxruntime", "onnx": "onnxruntime"}
    names = [alias.get(n, n) for n in names]
    bad = [n for n in names if n not in ENGINES]
    if bad or not names:
        raise _arg_error(f"{text!r}: choose from all, {', '.join(ENGINES)} (comma-separated)")
    return [e for e in ENGINES if e in names]


def _arg_error(msg):
    import argparse
    return argparse.ArgumentTypeError(msg)


def add_arguments(parser) -> None:
    parser.add_argument("bundle", help="an .onnx bundle, or the name of a shipped bundle")
    parser.add_argument("--engine", type=_engines, default=list(ENGINES), metavar="LIST",
                        help="engines to measure, comma-separated: torch, onnxruntime, numba (default: all)")
    parser.add_argument("--streams", type=_streams, default=_streams(DEFAULT_STREAMS), metavar="LIST",
                        help=f"streams per call for IOBinding and Numba (default {DEFAULT_STREAMS})")
    parser.add_argument("--steps", type=_positive_int, default=2000,
                        help="calls per timed repeat at 1 stream (default 2000); at S streams "
                             f"max({MIN_CALLS}, steps/S) calls, and the Numba block is that many samples "
                             "(fewer calls for a slow method: see --max-repeat-s)")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed repeats; medians reported (default 5)")
    parser.add_argument("--max-repeat-s", type=_positive_float, default=0.25, metavar="S",
                        help="per-call methods slower than this per repeat get fewer calls (at least "
                             f"{MIN_CALLS}; default 0.25 s), so a slow torch row does not dominate the run")
    parser.add_argument("--startup-runs", type=_nonnegative_int, default=2, metavar="N",
                        help="fresh processes per engine for the start-up time (default 2; 0 skips)")
    parser.add_argument("--cold-jit", action="store_true",
                        help="also time a Numba start-up with an empty JIT cache (a full compile: can take 30 s+)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="the time the µs and ratios use: wall (default) or this process's CPU time, which "
                             "leaves out time descheduled by other jobs on shared cores (both are reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# ---- child processes --------------------------------------------------------------------------
_STARTUP_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import edge
t1 = time.perf_counter()
# what edge.load imports on its own, timed apart: numpy, onnx (bundle metadata), the engine's library
import numpy as np, onnx
if sys.argv[2] == "numba":
    import edge.engine.numba_engine
else:
    import edge.engine.ort_engine
t2 = time.perf_counter()
model = edge.load(sys.argv[1], sys.argv[2])
t3 = time.perf_counter()
state = model.init_state(1)
y = model.step(np.zeros((1, model.input_size), np.float32), state)
t4 = time.perf_counter()
out = {"engine": model.engine, "import_edge_s": t1 - t0, "import_deps_s": t2 - t1, "import_s": t2 - t0,
       "load_s": t3 - t2, "first_step_s": t4 - t3, "total_s": t4 - t0,
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "torch_imported": "torch" in sys.modules}
stats = getattr(getattr(model.executor, "_run", None), "stats", None)
if stats is not None:
    out["numba_cache_hits"] = int(sum(stats.cache_hits.values()))
    out["numba_cache_misses"] = int(sum(stats.cache_misses.values()))
print("EDGE-BENCH " + json.dumps(out))
"""

_SGEMM_CHILD = r"""
import json, time
import numpy as np

rng = np.random.default_rng(0)
wall, cpu = {}, {}
for n, reps in ((1024, 10), (2048, 3)):
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    bw = bc = float("inf")
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        np.matmul(a, b, out=c)
        bw, bc = min(bw, time.perf_counter() - t0), min(bc, time.process_time() - c0)
    wall[n], cpu[n] = 2.0 * n ** 3 / bw / 1e9, 2.0 * n ** 3 / bc / 1e9
blas = None
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"].get("name")
except Exception:
    pass
# One BLAS thread: CPU time <= wall time, and CPU time leaves out time descheduled by other jobs.
# (Were BLAS threaded after all, CPU time would exceed wall time: the wall figure is used then.)
best_wall, best_cpu = max(wall.values()), max(cpu.values())
gflops = best_cpu if best_cpu >= best_wall else best_wall
print("EDGE-BENCH " + json.dumps({"gflops": gflops, "gflops_wall": best_wall, "gflops_cpu": best_cpu,
                                  "wall_by_size": wall, "cpu_by_size": cpu, "blas": blas,
                                  "numpy": np.__version__, "threads_env": 1}))
"""

ONE_THREAD_ENV = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                   "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def _child(code: str, args=(), env=None, timeout=600) -> tuple[dict, float]:
    """Run a Python snippet in a fresh interpreter; returns its result line and the process wall time."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("EDGE-BENCH "):
            return json.loads(line[len("EDGE-BENCH "):]), wall
    raise RuntimeError(f"child process failed (exit {proc.returncode}): {_error_line(proc.stderr)}")


def _error_line(stderr: str) -> str:
    """The line of a child's traceback that names the exception (numba colours its messages)."""
    import re
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    named = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*", ln)]
    text = (named or lines or ["no output"])[-1]
    return text if len(text) <= 200 else text[:197] + "..."


def measure_sgemm() -> dict:
    res, _ = _child(_SGEMM_CHILD, env=ONE_THREAD_ENV)
    return res


def _kernel_sources_mtime():
    """Numba's cache is keyed on its source file's time stamp: an edit invalidates it."""
    import importlib.util
    try:
        return os.stat(importlib.util.find_spec("edge.engine.kernels").origin).st_mtime_ns
    except (ImportError, AttributeError, OSError):
        return None


def measure_startup(bundle_path: str, engine: str, runs: int, cold_jit: bool) -> list:
    rows = []
    plans = [(i + 1, None) for i in range(runs)]
    if cold_jit and engine == "numba":
        import tempfile
        cold_dir = tempfile.mkdtemp(prefix="edge-bench-jit-")
        plans = [("cold", {"NUMBA_CACHE_DIR": cold_dir}), ("cold+1", {"NUMBA_CACHE_DIR": cold_dir})] + plans
    else:
        cold_dir = None
    try:
        for label, env in plans:
            before = _kernel_sources_mtime() if engine == "numba" else None
            try:
                res, wall = _child(_STARTUP_CHILD, (bundle_path, engine), env=env)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                rows.append({"engine": engine, "process": label, "error": str(e)})
                continue
            res.update({"engine": engine, "process": label, "process_wall_s": wall})
            if engine == "numba":
                hits, misses = res.get("numba_cache_hits"), res.get("numba_cache_misses")
                res["numba_cache"] = ("compiled (cache miss)" if misses else "cache hit" if hits else "unknown")
                res["numba_cache_dir"] = "empty temporary" if env else "default"
                if before != _kernel_sources_mtime():
                    res["numba_cache"] += "; the kernel sources changed during this run"
            rows.append(res)
    finally:
        if cold_dir:
            import shutil
            shutil.rmtree(cold_dir, ignore_errors=True)
    return rows


# ---- in-process timing ------------------------------------------------------------------------
def _time_repeats(loop, repeats: int) -> tuple[list, list]:
    """Wall and CPU seconds of each of `repeats` runs of loop(), after one warm-up run."""
    loop()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        loop()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def calls_for(streams: int, steps: int) -> int:
    return max(MIN_CALLS, -(-steps // streams))


def _inputs(streams: int, calls: int, channels: int, seed: int = 0):
    import numpy as np
    return np.random.default_rng(seed).standard_normal((calls, streams, channels), dtype=np.float32)


class _Torch:
    """The bundle's step program as a torch module (imported here, never at edge import time)."""

    def __init__(self, bundle):
        # torch comes with the export side (ImportError without it: the row is skipped with a note)
        from edge.export.program_torch import ProgramModule, torch
        self.torch = torch
        self.meta = bundle.meta
        self.module = ProgramModule(bundle.meta["program"], bundle.weights, bundle.meta["state"]).eval()

    def init(self, streams):
        return tuple(self.torch.full((streams, *s["shape"]), float(s.get("init", 0.0) or 0.0))
                     for s in self.meta["state"])

    def loop(self, xs):
        torch, module = self.torch, self.module
        xt = [torch.from_numpy(x) for x in xs]
        state = [self.init(xs.shape[1])]
        ys = []

        def run(keep=False):
            st = state[0]
            with torch.no_grad():
                for x in xt:
                    y, *st = module(x, *st)
                    if keep:
                        ys.append(y.numpy().copy())
            state[0] = tuple(st)
        return run, ys


class _OrtRun:
    def __init__(self, executor, meta):
        from edge.bundle import state_input, state_output
        self.session = executor.session
        self.meta = meta
        self.in_names = [state_input(s["name"]) for s in meta["state"]]
        self.out_names = ["y"] + [state_output(s["name"]) for s in meta["state"]]

    def init(self, streams):
        import numpy as np
        return [np.full((streams, *s["shape"]), float(s.get("init", 0.0) or 0.0), np.float32)
                for s in self.meta["state"]]

    def loop(self, xs):
        run_session, in_names, out_names = self.session.run, self.in_names, self.out_names
        state = [self.init(xs.shape[1])]
        ys = []

        def run(keep=False):
            st = state[0]
            for x in xs:
                feeds = dict(zip(in_names, st))
                feeds["x"] = x
                y, *st = run_session(out_names, feeds)
                if keep:
                    ys.append(y.copy())
            state[0] = st
        return run, ys


def _step_loop(executor, xs):
    step, state, ys = executor.step, executor.init_state(xs.shape[1]), []

    def run(keep=False):
        for x in xs:
            y = step(x, state)
            if keep:
                ys.append(y.copy())
    return run, ys


def _block_loop(executor, xs):
    block, state, ys = executor.block, executor.init_state(xs.shape[1]), []

    def run(keep=False):
        y = block(xs, state)
        if keep:
            ys.extend(y.copy())
    return run, ys


def _ratio(a, b):
    return a / b if (a is not None and b) else None


def _targets(rows: dict, floor_us: float) -> list:
    def us(method, streams):
        r = rows.get((method, streams))
        return r["us_per_sample"] if r else None

    values = {
        "numba_step_vs_iobinding_1": _ratio(us("ort_iobinding", 1), us("numba_step", 1)),
        "numba_block_vs_floor_1": _ratio(us("numba_block", 1), floor_us),
        "numba_block_vs_floor_1024": _ratio(us("numba_block", 1024), floor_us),
    }
    out = []
    for key, what, op, target in TARGETS:
        v = values[key]
        t = {"key": key, "what": what, "op": op, "target": target, "value": v}
        if v is None:
            t.update(met=None, status="not measured")
        elif op == ">=":
            t["met"] = v >= target
            t["gap"] = target / v   # how many times faster numba must get
            t["status"] = "target met" if t["met"] else f"gap: Numba per call must get {t['gap']:.2f}x faster"
        else:
            t["met"] = v <= target
            t["gap"] = v / target
            t["status"] = "target met" if t["met"] else f"gap: {t['gap']:.2f}x too slow"
        out.append(t)
    return out


def _measure_rows(args, bundle, tasks, make, streams_list, notes, bar):
    """The agreement check, then every timed row."""
    import numpy as np
    # agreement check: every method from the initial state on the same 64 samples at 1 stream
    check_x = _inputs(1, 64, bundle.input_size, seed=1)
    outputs = {}
    for m in tasks:
        made = make(m, check_x)
        if made:
            run, ys = made
            run(keep=True)
            outputs[m] = np.stack(ys)
    ref_key = "ort_run" if "ort_run" in outputs else next(iter(outputs), None)
    agreement = {m: float(np.abs(y - outputs[ref_key]).max()) for m, y in outputs.items()} if ref_key else {}
    if ref_key:
        limit = 1e-4 * max(1.0, float(np.abs(outputs[ref_key]).max()))
        for m, err in agreement.items():
            if not err <= limit:
                notes.append(f"{m} disagrees with {ref_key}: max abs difference {err:.3g} over "
                             f"{check_x.shape[0]} steps (limit {limit:.3g}): its timings are of a wrong result")

    rows = {}
    for m in tasks:
        label, _, which = METHODS[m]
        for S in ([1] if which == "one" else streams_list):
            bar.set_postfix_str(f"{m} x{S}")
            calls = calls_for(S, args.steps)
            xs = _inputs(S, calls, bundle.input_size)
            capped = False
            if m != "numba_block" and calls > MIN_CALLS and make(m, xs[:1]) is not None:
                # calibrate on a few calls (a warm-up too): a slow method gets fewer calls per repeat
                probe, _ = make(m, xs[:MIN_CALLS])
                probe()
                t0 = time.perf_counter()
                probe()
                per_call = (time.perf_counter() - t0) / MIN_CALLS
                fit = max(MIN_CALLS, int(args.max_repeat_s / per_call)) if per_call > 0 else calls
                if fit < calls:
                    calls, xs, capped = fit, xs[:fit], True
            made = make(m, xs)
            bar.update()
            if made is None:
                continue
            run, _ = made
            walls, cpus = _time_repeats(run, args.repeats)
            samples = calls * S
            wall = [1e6 * w / samples for w in walls]
            cpu = [1e6 * c / samples for c in cpus]
            chosen = cpu if args.clock == "cpu" else wall
            rows[(m, S)] = {
                "method": m, "label": label, "streams": S,
                "calls_per_repeat": 1 if m == "numba_block" else calls,
                "samples_per_call": calls * S if m == "numba_block" else S,
                "block_T": calls if m == "numba_block" else None,
                "repeats": args.repeats,
                "capped_by_time": capped,
                "us_per_sample": statistics.median(chosen),
                "us_per_sample_min": min(chosen),
                "wall_us_per_sample": statistics.median(wall),
                "cpu_us_per_sample": statistics.median(cpu),
                "wall_us_per_sample_all": wall,
                "cpu_us_per_sample_all": cpu,
                "us_per_call": statistics.median(chosen) * (calls * S if m == "numba_block" else S),
            }
    return agreement, ref_key, int(check_x.shape[0]), rows


def measure(args) -> dict:
    from edge import load
    from edge.bundle import read_bundle
    from edge.cost import step_cost

    def progress(total, desc):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is None or args.no_progress:
            class _Null:
                def update(self, n=1): pass
                def set_postfix_str(self, s): pass
                def close(self): pass
            return _Null()
        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=None, unit="task")

    bundle = read_bundle(args.bundle)
    meta = bundle.meta
    cost = step_cost(meta, bundle.weights)
    engines, streams_list = list(args.engine), list(args.streams)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    tasks = [m for m, (_, eng, _) in METHODS.items() if eng in engines]
    n_tasks = sum(1 if METHODS[m][2] == "one" else len(streams_list) for m in tasks)
    n_tasks += 1 + (args.startup_runs > 0) * len([e for e in engines if e != "torch"])
    bar = progress(n_tasks, "edge bench")
    notes, skipped = [], []

    # start-up: fresh processes first (a numba JIT miss also fills the cache for what follows)
    startup = []
    if args.startup_runs > 0:
        for eng in [e for e in ("numba", "onnxruntime") if e in engines]:
            bar.set_postfix_str(f"start-up {eng}")
            startup += measure_startup(bundle.path, eng, args.startup_runs, args.cold_jit and eng == "numba")
            bar.update()
    bar.set_postfix_str("sgemm peak")
    sgemm = measure_sgemm()
    bar.update()
    floor_us = cost["flops"] / (sgemm["gflops"] * 1e3)

    executors = {}
    for eng in ("onnxruntime", "numba"):
        if eng in engines:
            try:
                executors[eng] = load(bundle.path, eng).executor
            except Exception as e:  # e.g. an op without a Numba kernel: the rows are skipped, with why
                why = str(e).splitlines()[0]
                notes.append(f"{eng}: not measured: {why}")
                for m, (_, e2, _) in METHODS.items():
                    if e2 == eng:
                        skipped.append({"method": m, "why": why})
    torch_impl = None
    if "torch" in engines:
        try:
            torch_impl = _Torch(bundle)
        except ImportError as e:
            why = f"torch is not installed ({e}); pip install 'edge[train]' to measure it"
            notes.append(f"torch eager: skipped: {why}")
            skipped.append({"method": "torch_eager", "why": why})

    def make(method, xs):
        if method == "torch_eager":
            return torch_impl.loop(xs) if torch_impl else None
        if method == "ort_run":
            return _OrtRun(executors["onnxruntime"], meta).loop(xs) if "onnxruntime" in executors else None
        if method == "ort_iobinding":
            return _step_loop(executors["onnxruntime"], xs) if "onnxruntime" in executors else None
        if method == "numba_step":
            return _step_loop(executors["numba"], xs) if "numba" in executors else None
        return _block_loop(executors["numba"], xs) if "numba" in executors else None

    threads_before = None
    if torch_impl is not None:
        threads_before = torch_impl.torch.get_num_threads()
        torch_impl.torch.set_num_threads(1)
    try:
        agreement, ref_key, check_steps, rows = _measure_rows(args, bundle, tasks, make, streams_list, notes, bar)
    finally:
        if threads_before is not None:
            torch_impl.torch.set_num_threads(threads_before)
    bar.close()


    for (m, S), r in rows.items():
        iob = rows.get(("ort_iobinding", S))
        r["vs_floor"] = r["us_per_sample"] / floor_us
        r["speedup_vs_iobinding"] = _ratio(iob["us_per_sample"], r["us_per_sample"]) if iob else None

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    stretch = [r["wall_us_per_sample"] / r["cpu_us_per_sample"] for r in rows.values() if r["cpu_us_per_sample"] > 0]
    if stretch and statistics.median(stretch) > 1.25:
        notes.append(f"wall time was {statistics.median(stretch):.2f}x this process's CPU time (median over rows): "
                     "other jobs share these cores" + ("; --clock cpu leaves that out" if args.clock == "wall" else ""))
    return {
        "bundle": bundle.path,
        "name": meta.get("name"),
        "model": meta.get("model", {}).get("class"),
        "ops": [op["op"] for op in meta["program"]["ops"]],
        "inputs": bundle.input_size, "outputs": bundle.output_size, "state_floats": bundle.state_floats,
        "macs_per_step": cost["macs"], "flops_per_step": cost["flops"],
        "parameters": cost["parameters"],
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": load_after,
                    "versions": _versions(torch_impl)},
        "settings": {"steps": args.steps, "repeats": args.repeats, "streams": streams_list,
                     "engines": engines, "min_calls": MIN_CALLS,
                     "max_repeat_s": args.max_repeat_s, "statistic": "median over repeats",
                     "clock": args.clock,
                     "torch_threads": 1, "ort_threads": 1},
        "sgemm": sgemm,
        "floor_us": floor_us,
        "startup": startup,
        "agreement_max_abs": {"reference": ref_key, "steps": check_steps, **agreement},
        "rows": list(rows.values()),
        "targets": _targets(rows, floor_us),
        "skipped": skipped,
        "notes": notes,
    }


def _versions(torch_impl) -> dict:
    import numpy as np
    v = {"numpy": np.__version__}
    for mod in ("onnxruntime", "numba"):
        m = sys.modules.get(mod)
        if m is not None:
            v[mod] = getattr(m, "__version__", "?")
    if torch_impl is not None:
        v["torch"] = torch_impl.torch.__version__
    return v


# ---- output ---------------------------------------------------------------------------------------
def _fmt_us(v):
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _fmt_x(v):
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def print_table(res: dict, out=None) -> None:
    out = sys.stdout if out is None else out
    p = lambda *a: print(*a, file=out)
    streams = res["settings"]["streams"]
    p(f"edge bench {res['bundle']}")
    p(f"model     {res.get('name') or '-'}: {res.get('model') or '?'}, {len(res['ops'])} ops "
      f"({', '.join(sorted(set(res['ops'])))}); {res['inputs']} in, {res['outputs']} out, "
      f"{res['state_floats']:,} state floats, {res['parameters']:,} parameters")
    m = res["machine"]
    la = lambda t: "?" if t is None else f"{t[0]:.1f}"
    p(f"machine   {m['processor']}, {m['cpus']} CPUs, load average {la(m['load_average_before'])} -> "
      f"{la(m['load_average_after'])}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    s = res["sgemm"]
    p(f"floor     {res['flops_per_step']:,} FLOP/step / {s['gflops']:.1f} GFLOP/s (numpy sgemm, 1 thread, best by CPU time"
      f"{', ' + s['blas'] if s.get('blas') else ''}) = {res['floor_us']:.3g} µs per stream-sample")
    st = res["settings"]
    p(f"settings  {st['steps']} calls per repeat at 1 stream (at S streams max({st['min_calls']}, steps/S)), "
      f"{st['repeats']} repeats, medians; torch and ORT 1 thread")

    if res["startup"]:
        p("")
        p("start-up in a fresh process: import edge (+ numpy, onnx, the engine library) + edge.load + first step, s")
        p(f"  {'engine':<12} {'process':<8} {'import':>7} {'+deps':>7} {'load':>7} {'1st step':>9} {'total':>7} "
          f"{'proc wall':>10} {'peak RSS':>9}  numba JIT")
        for r in res["startup"]:
            if "error" in r:
                p(f"  {r['engine']:<12} {str(r['process']):<8} failed: {r['error']}")
                continue
            jit = r.get("numba_cache", "")
            if jit and r.get("numba_cache_dir") == "empty temporary":
                jit += " (empty cache dir)"
            p(f"  {r['engine']:<12} {str(r['process']):<8} {r['import_edge_s']:>7.3f} {r['import_deps_s']:>7.3f} "
              f"{r['load_s']:>7.3f} {r['first_step_s']:>9.4f} {r['total_s']:>7.3f} {r['process_wall_s']:>10.3f} "
              f"{r['peak_rss_mb']:>6.0f} MB  {jit}")

    rows = {(r["method"], r["streams"]): r for r in res["rows"]}
    methods = [k for k in METHODS if any(k == mm for mm, _ in rows)]
    w = max([len(METHODS[k][0]) for k in methods] + [len("speed-up vs ORT IOBinding (same streams)")])
    head = "".join(f"{f'{S:,} str':>11}" for S in streams)

    def table(title, value):
        p("")
        p(f"{title:<{w}}  {head}")
        for k in methods:
            cells = "".join(f"{value(rows[(k, S)]) if (k, S) in rows else '-':>11}" for S in streams)
            p(f"{METHODS[k][0]:<{w}}  {cells}")

    if rows:
        other = "cpu" if st["clock"] == "wall" else "wall"
        table(f"µs per stream-sample ({st['clock']} median)", lambda r: _fmt_us(r["us_per_sample"]))
        table(f"  ({other} time median, for comparison)", lambda r: _fmt_us(r[f"{other}_us_per_sample"]))
        p(f"ratios below use the {st['clock']} medians")
        table(f"x FLOP floor ({res['floor_us']:.3g} µs)", lambda r: _fmt_x(r["vs_floor"]))
        table("speed-up vs ORT IOBinding (same streams)", lambda r: _fmt_x(r["speedup_vs_iobinding"]))
        blocks = [r for r in res["rows"] if r["method"] == "numba_block"]
        if blocks:
            p("(Numba block: T = " + ", ".join(f"{r['block_T']} at {r['streams']:,}" for r in blocks)
              + " samples per call)")
        capped = [r for r in res["rows"] if r.get("capped_by_time")]
        if capped:
            p(f"(calls per repeat cut to fit --max-repeat-s {st['max_repeat_s']:g}: "
              + ", ".join(f"{METHODS[r['method']][0].split(' (')[0]} at {r['streams']:,}: {r['calls_per_repeat']}"
                          for r in capped) + ")")
    ag = res["agreement_max_abs"]
    if ag.get("reference"):
        p("")
        p(f"agreement max |y - {ag['reference']}| over {ag['steps']} steps: "
          + ", ".join(f"{k} {v:.2g}" for k, v in ag.items() if k not in ("reference", "steps")))
    p("")
    p("targets")
    for t in res["targets"]:
        v = "-" if t["value"] is None else f"{t['value']:.2f}x"
        p(f"  {t['what']:<56} {v:>8}  (target {t['op']} {t['target']:g}x): {t['status']}")
    for n in res["notes"]:
        p(f"note: {n}")


def _json_safe(obj):
    import numpy as np
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def run(args) -> int:
    res = measure(args)
    if args.json:
        print(json.dumps(_json_safe(res), indent=2))
    else:
        print_table(res)
    return 0
