"""`edge train forecast DATA --target COLS --horizon H`: a streaming forecaster for any recorded
series, with the baselines it must beat scored in the same run on the same test origins.

Data rules (reading, missing values, split, normalisation, origins): `edge.tasks.forecast.series`.
The model is the LMU + closed-form readout of `edge train ett-forecast` (models/training/forecast.py),
one per channel with the readout shared by the channels; its memory window θ is chosen among
``--thetas`` multiples of the window on the validation split only; the test split is scored once,
at the end, beside last value, seasonal naive (period detected on train, or ``--period``) and least
squares from the last W rows to the horizon, one fit per channel and one fit shared by all channels.

The bundle steps one row at a time and emits, after each row, the next H rows of every target
channel, named ``<column>+<h>``, in the data's own units (normalisation stored in the bundle):
``edge replay DATA --model FILE.onnx`` runs it on any file with the same columns.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from edge.export.bundle_export import export_bundle
from edge.models.training.forecast import fit_forecaster
from edge.tasks.forecast.series import (baseline_forecasts, detect_period, load_series, parse_split,
                                        score_by_horizon, truth)


def model_forecast(features, z, w, origins, horizon):
    """The LMU readout's forecasts [n, H, C] (normalised), as the bundle computes them in float64."""
    return np.einsum("ncd,dh->nhc", features[origins], w[:, :horizon]) + z[origins][:, None, :]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="edge train forecast", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n"
                                        "  edge train forecast weather.csv --target T,p --horizon 96 --out weather.onnx\n"
                                        "  edge train forecast log.csv --target power --horizon 24 --window 168 --json\n")
    ap.add_argument("data", help="a CSV, NPZ or JSON-lines file (a t column in seconds, or an ISO date column)")
    ap.add_argument("--target", required=True, help="comma-separated columns to forecast (the model's inputs too)")
    ap.add_argument("--horizon", type=int, required=True, help="rows ahead the bundle forecasts (1..H)")
    ap.add_argument("--horizons", default=None, help="comma-separated horizons the report scores (default: H)")
    ap.add_argument("--window", type=int, default=96, help="rows the baselines see; θ is a multiple of it (default 96)")
    ap.add_argument("--split", default="0.7,0.1,0.2", help="train,val,test fractions by rows (default 0.7,0.1,0.2)")
    ap.add_argument("--period", type=int, default=None, help="season in rows for seasonal naive (default: detected)")
    ap.add_argument("--thetas", default="1,2,4", help="memory windows to try, in multiples of --window (default 1,2,4)")
    ap.add_argument("--order", type=int, default=64, help="Legendre memory order (default 64)")
    ap.add_argument("--rank", type=int, default=16, help="rank of the readout per channel (default 16)")
    ap.add_argument("--ridge", type=float, default=1e-4, help="ridge, relative to the mean Gram diagonal")
    ap.add_argument("--out", default=None, help="the bundle (default: runs/forecast/<data name>.onnx)")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = ap.parse_args(argv)
    args.targets = [c.strip() for c in args.target.split(",") if c.strip()]
    args.split = parse_split(args.split)
    args.report_horizons = sorted({int(h) for h in args.horizons.split(",")}) if args.horizons else [args.horizon]
    bad = [h for h in args.report_horizons if not 1 <= h <= args.horizon]
    if args.horizon < 1 or args.window < 2 or bad:
        ap.error(f"--horizon >= 1, --window >= 2 and every --horizons value in 1..{args.horizon}")
    args.theta_factors = [float(f) for f in args.thetas.split(",")]
    return args


def train(args) -> dict:
    start = time.time()
    s = load_series(args.data, args.targets, args.split, min_rows=args.window + args.horizon)
    z, H, W = s.z, args.horizon, args.window
    steps = tqdm(total=len(args.theta_factors) + 2, desc="forecast", file=sys.stderr, disable=args.no_progress)
    val_truth, candidates = truth(s, "val", H, W), []
    for factor in args.theta_factors:
        theta = factor * W
        origins = s.origins("train", H, W)
        origins = origins[origins >= min(2 * theta, s.borders["train"][1] // 2)]  # the memory has filled
        model, features, w = fit_forecaster(z, origins, s.mean, s.std, args.order, theta, args.rank,
                                            args.ridge, horizon=H)
        val = score_by_horizon(model_forecast(features, z, w, s.origins("val", H, W), H), val_truth, [H])[H]["mse"]
        candidates.append({"theta": theta, "val_mse": val, "model": model, "features": features, "w": w,
                           "origins": len(origins)})
        steps.update()
    best = min(candidates, key=lambda c: c["val_mse"])
    period = args.period or detect_period(z[slice(*s.borders["train"])], max_lag=min(4 * W, 2000))
    test_truth, test_origins = truth(s, "test", H, W), s.origins("test", H, W)
    forecasts = {"edge LMU forecaster": model_forecast(best["features"], z, best["w"], test_origins, H),
                 **baseline_forecasts(s, "test", H, W, period)}
    steps.update()
    table = {name: score_by_horizon(f, test_truth, args.report_horizons) for name, f in forecasts.items()}
    ls = [n for n in table if n.startswith("least squares")]
    stronger = {h: min(ls, key=lambda n: table[n][h]["mse"]) for h in args.report_horizons}
    ours = table["edge LMU forecaster"]
    out = Path(args.out) if args.out else Path("runs") / "forecast" / f"{Path(args.data).name.split('.')[0]}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    channels = s.channels
    meta = export_bundle(
        best["model"], out, input_size=len(channels), task="forecast", name=out.stem,
        inputs=[{"name": c, "unit": ""} for c in channels],
        outputs=[f"{c}+{h + 1}" for h in range(H) for c in channels],
        sample_rate_hz=s.rate_hz,
        normalisation={"mean": s.mean.tolist(), "std": s.std.tolist(),
                       "fitted_on": f"{Path(args.data).name} rows {s.borders['train'][0]}..{s.borders['train'][1] - 1}"},
        parity_input=np.ascontiguousarray(z[-min(len(z), 1000):, None, :], dtype=np.float32),
        parity_steps=min(len(z), 1000),
        config={"horizon": H, "channels": channels, "order": args.order, "theta": best["theta"],
                "rank": args.rank, "ridge": args.ridge, "window": W,
                "layout": "y[h*C + c] is channel c at row t+1+h (h = 0..horizon-1), in the input's units"},
        provenance={"command": "edge train forecast " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["train", "forecast"]
                                                                  else [str(args.data)]),
                    "data": Path(args.data).name, "train_wall_s": round(time.time() - start, 1)},
        metrics={"validation_mse": {str(c["theta"]): c["val_mse"] for c in candidates}, "test": table})
    steps.update()
    steps.close()
    return {"bundle": str(out), "rows": len(z), "rate_hz": s.rate_hz, "split": s.borders, "notes": s.notes,
            "channels": channels, "horizon": H, "window": W, "period": period,
            "validation": [{"theta": c["theta"], "mse": c["val_mse"], "train_origins": c["origins"]} for c in candidates],
            "chosen_theta": best["theta"], "test_origins": int(len(test_origins)), "test": table,
            "stronger_least_squares": stronger,
            "beats_stronger_least_squares": {h: ours[h]["mse"] < table[n][h]["mse"] for h, n in stronger.items()},
            "parity": meta.get("parity"), "wall_s": round(time.time() - start, 1)}


def format_report(r: dict) -> str:
    hs = list(next(iter(r["test"].values())))
    lines = [f"{r['bundle']}: {len(r['channels'])} channel(s) {', '.join(r['channels'])}, {r['rows']:,} rows at "
             f"{r['rate_hz']:.4g} Hz; split rows {r['split']}; missing values: {r['notes']}",
             "validation MSE by memory window θ: " + ", ".join(f"θ={v['theta']:g} {v['mse']:.4f}" for v in r["validation"])
             + f" -> θ={r['chosen_theta']:g}",
             f"test ({r['test_origins']} origins, normalised space, read once):",
             "| forecaster | " + " | ".join(f"H{h} MSE / MAE" for h in hs) + " |",
             "|---|" + "---|" * len(hs)]
    for name, row in r["test"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[h]['mse']:.4f} / {row[h]['mae']:.4f}" for h in hs) + " |")
    beats = r["beats_stronger_least_squares"]
    lines.append("against the stronger least squares at each horizon, the edge forecaster: " + "; ".join(
        f"H{h} {'beats' if b else 'does not beat'} {r['stronger_least_squares'][h].removeprefix('least squares, ')}"
        for h, b in beats.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    report = train(args)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
