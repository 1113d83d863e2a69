"""`edge train classify DATA --label COL`: a streaming classifier for any recorded series with a
class per row (per-sample labels, or segments: a label that holds for many rows), beside the
majority class and a logistic regression on window statistics, scored in the same run.

Data: read as `edge replay` reads it (`edge.io.recordings.read_recording`); ``--channels`` (default:
every numeric column but the label, the group and the time) are the inputs; the label and the
``--group`` column (a subject or recording id) must be numbers. A row whose label is NaN is not
scored; NaN inputs are interpolated linearly within their stream, its ends held.
Split: with ``--group``, whole groups in their order of appearance, ``--split`` fractions of the
groups (each group is its own stream: the memory restarts); without, chronological by rows.

Model: each channel's Legendre memory of the last ``--window`` rows (θ) and the current value, one
linear readout fitted in closed form (ridge regression to one-hot classes, ridge chosen on the
validation part), softmax probabilities out; the bundle emits one probability per class every row,
named ``class_<label>``. Baselines: the train split's majority class; a multinomial logistic
regression (scikit-learn) on each channel's mean, std, min and max over the last W rows.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge.export.bundle_export import export_bundle
from edge.io.recordings import RecordingError, read_recording
from edge.models.heads import ClassifierHead
from edge.models.lmu import LMU, LegendreMemory
from edge.models.stack import Stack
from edge.models.training.forecast import legendre_features
from edge.tasks.forecast.baselines import ridge_solve
from edge.tasks.forecast.series import parse_split

TIME_COLUMNS = ("t", "time", "date", "datetime", "timestamp")
RIDGES = (1e-6, 1e-4, 1e-2)


def read(path, label: str, group: str | None, channels: list | None):
    rec = read_recording(path, channels=[label] + ([group] if group else []) + list(channels or []),
                         check_units=False)
    names = [c.lower() for c in rec.channels]
    want = [label] + ([group] if group else [])
    missing = [c for c in want + list(channels or []) if c.lower() not in names]
    if missing:
        raise RecordingError(f"no column {', '.join(missing)} (it has {', '.join(rec.channels)})", path)
    if channels is None:
        channels = [c for c in rec.channels if c.lower() not in {w.lower() for w in want} | set(TIME_COLUMNS)]
    col = lambda c: rec.x[:, names.index(c.lower())].astype(np.float64)
    y = col(label)
    groups = col(group) if group else np.zeros(len(y))
    if group and not np.all(np.isfinite(groups)):
        raise RecordingError(f"column {group!r}: {int((~np.isfinite(groups)).sum())} rows without a group", path)
    x = np.stack([col(c) for c in channels], 1)
    return x, y, groups, list(channels), float(rec.rate_hz)


def split_rows(y, groups, fractions, grouped: bool) -> dict:
    """split -> boolean row mask."""
    n = len(y)
    if grouped:
        order = list(dict.fromkeys(groups.tolist()))
        if len(order) < 3:
            raise ValueError(f"--group: {len(order)} group(s); a grouped split needs at least 3")
        cuts = np.clip(np.round(np.cumsum(fractions) * len(order)).astype(int), 1, len(order))
        cuts[1] = min(max(cuts[1], cuts[0] + 1), len(order) - 1)
        part = {g: ("train" if k < cuts[0] else "val" if k < cuts[1] else "test") for k, g in enumerate(order)}
        return {s: np.array([part[g] == s for g in groups.tolist()]) for s in ("train", "val", "test")}
    cuts = np.round(np.cumsum(fractions) * n).astype(int)
    rows = np.arange(n)
    return {"train": rows < cuts[0], "val": (rows >= cuts[0]) & (rows < cuts[1]), "test": rows >= cuts[1]}


def streams(groups) -> list[slice]:
    """Contiguous runs of one group: each is one stream (the memory restarts)."""
    edges = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1, len(groups)]
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def memory_features(z, runs, memory: LegendreMemory) -> np.ndarray:
    """[N, C·d + C]: each channel's memory m_t (restarted per run), then z_t — the bundle's hidden layer."""
    A, B = memory.A_bar.double().numpy(), memory.B_bar.double().numpy()
    e = np.linalg.solve(np.eye(len(A)) - A, B)
    out = np.empty((len(z), z.shape[1] * (len(A) + 1)))
    for r in runs:
        m = legendre_features(z[r], memory) + z[r][:, :, None] * e          # the raw memory
        out[r] = np.concatenate([m.reshape(len(m), -1), z[r]], 1)
    return out


def window_stats(z, runs, window: int) -> np.ndarray:
    """[N, 4C]: mean, std, min, max of each channel over the last `window` rows of its run (fewer at a start)."""
    out = np.empty((len(z), 4 * z.shape[1]))
    for r in runs:
        x = z[r]
        pad = np.concatenate([np.repeat(x[:1], window - 1, 0), x])
        v = np.lib.stride_tricks.sliding_window_view(pad, window, axis=0)     # [n, C, W]
        out[r] = np.concatenate([v.mean(-1), v.std(-1), v.min(-1), v.max(-1)], 1)
    return out


def fit_readout(f, onehot, ridge):
    """Ridge regression with an intercept: (W [F, K], b [K])."""
    mf, my = f.mean(0), onehot.mean(0)
    fc = f - mf
    w = ridge_solve(fc.T @ fc, fc.T @ (onehot - my), ridge)
    return w, my - mf @ w


def build_model(memory: LegendreMemory, w, b) -> Stack:
    channels, order = memory.channels, memory.order
    width = channels * (order + 1)
    lmu = LMU(channels, width, order, memory.theta, memory_channels=channels, activation="identity")
    head = ClassifierHead(width, w.shape[1], probabilities=True)
    with torch.no_grad():
        lmu.memory.A_bar.copy_(memory.A_bar)
        lmu.encoder.weight.copy_(torch.eye(channels, dtype=torch.float64))
        lmu.encoder.bias.zero_()
        lmu.hidden.weight.copy_(torch.eye(width, dtype=torch.float64))   # [memory, z] as they are
        lmu.hidden.bias.zero_()
        head.linear.weight.copy_(torch.from_numpy(w.T))
        head.linear.bias.copy_(torch.from_numpy(b))
    return Stack(lmu, head).eval()


def accuracy(pred, y, mask) -> float:
    keep = mask & (y >= 0)
    return round(float(np.mean(pred[keep] == y[keep])), 4) if keep.any() else float("nan")


def train(args) -> dict:
    start = time.time()
    x, raw_y, groups, channels, rate = read(args.data, args.label, args.group, args.channels)
    runs = streams(groups)
    for r in runs:                      # NaN inputs: interpolated per stream, the ends held
        for c in range(x.shape[1]):
            v, bad = x[r, c], ~np.isfinite(x[r, c])
            if bad.any() and not bad.all():
                v[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), v[~bad])
                x[r, c] = v
    known = np.isfinite(raw_y)
    classes = np.unique(raw_y[known])
    y = np.full(len(raw_y), -1)
    y[known] = np.searchsorted(classes, raw_y[known])
    masks = split_rows(y, groups, args.split, args.group is not None)
    train_x = x[masks["train"]]
    mean, std = np.nanmean(train_x, 0), np.nanstd(train_x, 0)
    std[std == 0] = 1.0
    z = np.nan_to_num((x - mean) / std)
    memory = LegendreMemory(len(channels), args.order, float(args.window))
    feats = memory_features(z, runs, memory)
    fit_rows = masks["train"] & (y >= 0)
    onehot = np.eye(len(classes))[y[fit_rows]]
    tried = []
    for ridge in RIDGES:
        w, b = fit_readout(feats[fit_rows], onehot, ridge)
        tried.append((accuracy((feats @ w + b).argmax(1), y, masks["val"]), ridge, w, b))
    val_acc, ridge, w, b = max(tried, key=lambda t: (t[0], t[1]))
    ours = (feats @ w + b).argmax(1)
    majority = np.full(len(y), np.bincount(y[fit_rows], minlength=len(classes)).argmax())
    from sklearn.linear_model import LogisticRegression
    stats = window_stats(z, runs, args.window)
    step = max(1, int(fit_rows.sum()) // 20000)            # at most ~20k rows for the baseline's fit
    logit = LogisticRegression(max_iter=500).fit(stats[fit_rows][::step], y[fit_rows][::step])
    table = {name: {split: accuracy(pred, y, masks[split]) for split in ("val", "test")}
             for name, pred in (("edge LMU classifier", ours), ("majority class", majority),
                                ("logistic regression on window statistics", logit.predict(stats)))}
    out = Path(args.out) if args.out else Path("runs") / "classify" / f"{Path(args.data).name.split('.')[0]}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [f"class_{c:g}" for c in classes]
    parity = z[runs[0]][-min(500, runs[0].stop - runs[0].start):]
    export_bundle(build_model(memory, w, b), out, input_size=len(channels), task="classification", name=out.stem,
                  inputs=[{"name": c, "unit": ""} for c in channels], outputs=names, sample_rate_hz=rate,
                  normalisation={"mean": mean.tolist(), "std": std.tolist(), "fitted_on": "train split"},
                  parity_input=np.ascontiguousarray(parity[:, None, :], dtype=np.float32), parity_steps=len(parity),
                  config={"window": args.window, "order": args.order, "ridge": ridge, "label": args.label,
                          "group": args.group, "classes": classes.tolist()},
                  provenance={"command": "edge train classify", "data": Path(args.data).name,
                              "train_wall_s": round(time.time() - start, 1)},
                  metrics={"classes": names, "accuracy": table})
    return {"bundle": str(out), "rows": len(y), "channels": channels, "classes": names, "grouped": args.group is not None,
            "split_rows": {s: int(m.sum()) for s, m in masks.items()}, "validation_accuracy_by_ridge":
            {str(t[1]): t[0] for t in tried}, "chosen_ridge": ridge, "accuracy": table,
            "wall_s": round(time.time() - start, 1)}


def format_report(r) -> str:
    lines = [f"{r['bundle']}: {len(r['channels'])} channel(s), {r['rows']:,} rows, classes {', '.join(r['classes'])}; "
             f"split rows {r['split_rows']} ({'by group' if r['grouped'] else 'chronological'})",
             "| classifier | validation accuracy | test accuracy |", "|---|---|---|"]
    lines += [f"| {n} | {a['val']:.3f} | {a['test']:.3f} |" for n, a in r["accuracy"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="edge train classify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n  edge train classify watch.csv --label label --group subject "
                                        "--window 100 --out watch.onnx\n")
    ap.add_argument("data", help="a CSV, NPZ or JSON-lines file with a numeric label column")
    ap.add_argument("--label", required=True, help="the column of class labels (numbers; NaN: not scored)")
    ap.add_argument("--group", default=None, help="a subject/recording column: split by whole groups")
    ap.add_argument("--channels", default=None, help="comma-separated input columns (default: all others)")
    ap.add_argument("--window", type=int, default=100, help="rows the memory and the window statistics cover")
    ap.add_argument("--order", type=int, default=16, help="Legendre memory order per channel (default 16)")
    ap.add_argument("--split", default="0.7,0.1,0.2", help="train,val,test fractions (rows, or groups)")
    ap.add_argument("--out", default=None, help="the bundle (default runs/classify/<data name>.onnx)")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = ap.parse_args(argv)
    args.split = parse_split(args.split)
    args.channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    torch.set_num_threads(1)
    report = train(args)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
