"""How much faster is the parallel face (`forward` over the whole sequence) than streaming (`step` in a
Python loop over T)? Torch, eval mode, no_grad, on the CPU.

    python bench/parallel_speedup.py                 # batch 1, T = 1,000 and 10,000
    python bench/parallel_speedup.py --batch 16 --json

Each timing is the best of up to --repeats runs (fewer once --budget seconds are spent) after one
warm-up run, which also fills the layers' caches (e.g. the LMU's impulse response for that T). The last column is the largest absolute difference
between the two faces' outputs, as a check that both computed the same thing.
"""
import argparse
import json
import platform
import time

import torch

from edge.models import LMU, S4D, ClassifierHead, LMUFormer, unroll

MODELS = {
    # name: (builder, input channels)
    "LMU": (lambda: LMU(1, 64, order=64, theta=100.0), 1),
    "S4D": (lambda: S4D(64, state_size=64), 64),
    "LMUFormer": (lambda: LMUFormer(1, 64, ClassifierHead(64, 10), depth=1, order=64, theta=64.0), 1),
}


def best_ms(fn, repeats, budget_s):
    """Best of `repeats` timed runs after a warm-up, fewer once `budget_s` seconds are spent."""
    t0 = time.perf_counter()
    out = fn()  # warm-up
    spent, times = time.perf_counter() - t0, []
    for _ in range(repeats):
        if times and spent > budget_s:
            break
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return 1e3 * min(times), out


def measure(name, T, batch, repeats, step_repeats, budget_s):
    build, channels = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(batch, T, channels)
    with torch.no_grad():
        parallel_ms, (y, _) = best_ms(lambda: model(x), repeats, budget_s)
        step_ms, (y_step, _) = best_ms(lambda: unroll(model, x), step_repeats, budget_s)
        diff = (y - y_step).abs().max().item()
    return {"model": name, "T": T, "batch": batch, "parallel_ms": parallel_ms, "step_loop_ms": step_ms,
            "speedup": step_ms / parallel_ms, "max_abs_diff": diff}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1_000, 10_000], metavar="T",
                        help="sequence lengths (default: 1000 10000)")
    parser.add_argument("--batch", type=int, default=1, help="streams per call (default: 1)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the parallel forward (default: 5)")
    parser.add_argument("--step-repeats", type=int, default=1, help="timed runs of the step loop (default: 1)")
    parser.add_argument("--budget", type=float, default=5.0,
                        help="seconds after which no further repeat of a measurement starts (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}
    if not args.json:
        print(f"parallel forward vs Python loop of step; batch {args.batch}, torch {meta['torch']}, "
              f"{meta['threads']} thread(s), eval, no_grad")
        print(f"{'model':<10} {'T':>7} {'parallel ms':>12} {'step loop ms':>13} {'speed-up':>9} {'max|Δ|':>9}")
    rows = []
    for name in args.models:
        for T in args.lengths:
            r = measure(name, T, args.batch, args.repeats, args.step_repeats, args.budget)
            rows.append(r)
            if not args.json:
                print(f"{r['model']:<10} {r['T']:>7,} {r['parallel_ms']:>12.2f} {r['step_loop_ms']:>13.1f} "
                      f"{r['speedup']:>8.1f}x {r['max_abs_diff']:>9.1e}", flush=True)
    if args.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=2))

if __name__ == "__main__":
    main()
