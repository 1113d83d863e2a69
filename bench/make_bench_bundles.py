"""Export the three bundles `edge bench` is measured on (needs torch: `pip install edge[train]`).

    python bench/make_bench_bundles.py                  # -> bench/bundles/{lmu,s4d,lmuformer}.onnx
    python bench/make_bench_bundles.py /tmp/bundles --only lmu
    edge bench bench/bundles/lmu.onnx

The models are randomly initialised (seed 0) and in eval mode: `edge bench` measures speed, and
speed does not depend on trained weights.

- lmu:       Stack(LMU(6, 64, order 64, theta 64), ForecastHead(64, 1, 1))
- s4d:       Stack(Pointwise(Linear(6, 64)), S4D(64 channels, 32 modes), ForecastHead(64, 1, 1))
- lmuformer: LMUFormer(6, 32, ClassifierHead(32, 5), depth 2, order 32, theta 32)
"""
import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = 6


def builders():
    try:
        import torch
        from torch import nn
    except ImportError:
        sys.exit("make_bench_bundles.py needs torch: pip install 'edge[train]' (install torch==2.13.0, the CPU "
                 "wheel, first)")
    from edge.models import LMU, S4D, ClassifierHead, ForecastHead, LMUFormer, Pointwise, Stack

    return torch, {
        "lmu": (lambda: Stack(LMU(INPUTS, 64, 64, 64.0), ForecastHead(64, 1, 1)), "forecast",
                "LMU d=64, hidden 64, 6 inputs, forecast head"),
        "s4d": (lambda: Stack(Pointwise(nn.Linear(INPUTS, 64)), S4D(64, 64), ForecastHead(64, 1, 1)), "forecast",
                "S4D 64 channels x 32 modes, 6 inputs, forecast head"),
        "lmuformer": (lambda: LMUFormer(INPUTS, 32, ClassifierHead(32, 5), depth=2, order=32, theta=32.0), "classify",
                      "LMUFormer dim 32, depth 2, order 32, 5 classes"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default=str(HERE / "bundles"), help="output folder (default bench/bundles/)")
    p.add_argument("--only", default=None, help="comma-separated subset of lmu,s4d,lmuformer")
    p.add_argument("--parity-steps", type=int, default=1000, help="parity-check steps at export (default 1000)")
    args = p.parse_args(argv)

    torch, models = builders()
    from edge.export.bundle_export import export_bundle

    names = list(models) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in models]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(models)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() == (HERE / "bundles").resolve() and not (out / ".gitignore").exists():
        (out / ".gitignore").write_text("# exported by bench/make_bench_bundles.py: not versioned\n*\n")
    for name in names:
        build, task, what = models[name]
        torch.manual_seed(0)
        model = build().eval()
        path = out / f"{name}.onnx"
        t0 = time.perf_counter()
        meta = export_bundle(model, path, input_size=INPUTS, task=task, name=f"bench-{name}",
                             parity_steps=args.parity_steps, config={"description": what},
                             provenance={"command": "python bench/make_bench_bundles.py", "data": "none (random init)"})
        par = meta["parity"]
        print(f"{path}  ({path.stat().st_size / 1024:.1f} KiB, {time.perf_counter() - t0:.1f} s)  {what}; parity max abs: "
              f"onnxruntime {par.get('onnxruntime_max_abs')}, numba {par.get('numba_max_abs')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
