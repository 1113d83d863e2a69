"""`edge replay` view of a forecasting bundle (task "forecast"): how the forecasts made while
streaming compare with what actually came, and a plot of forecast vs actual.

A forecast bundle emits, after each row t, the next H rows of its C channels, horizon-major
(``y[t, h·C + c]`` is channel c at row t+1+h; metadata ``model.config.horizon``). The metric for
horizon H is the Informer/S4 one over this recording: MSE and MAE over every origin t whose H targets
are in the file and steps 1..H, in the bundle's normalised space (its train statistics), beside
repeat-last-value over the same origins. Held rows (not fed) and non-finite targets are not scored.
"""
from __future__ import annotations

import numpy as np

from edge.io.channels import select_inputs

REPORTED = (1, 24, 48, 168, 336, 720)


def layout(meta) -> tuple[list, int]:
    """(channel names, horizon) of a forecast bundle."""
    names = [str(c["name"]) for c in meta["inputs"]]
    return names, len(meta["outputs"]) // len(names)


def normaliser(meta, channels: int):
    norm = meta.get("normalisation") or {}
    mean = np.asarray(norm.get("mean", np.zeros(channels)), np.float64)
    std = np.asarray(norm.get("std", np.ones(channels)), np.float64)
    return mean, std


class Forecasts:
    """A replay's forecasts against the recording, in the bundle's normalised space. The [N, H, C]
    forecasts stay the replay's float32 rows (a view); each step is normalised when it is scored."""

    def __init__(self, rec, res, meta):
        self.names, self.horizon = layout(meta)
        self.mean, self.std = normaliser(meta, len(self.names))
        self.actual = (select_inputs(rec, meta, "forecast").astype(np.float64) - self.mean) / self.std  # [N, C]
        self.y = res.y.reshape(len(res.y), self.horizon, len(self.names))
        self.ok = ~res.held & np.all(np.isfinite(res.y), axis=1)   # origins that are scored

    def at(self, step: int):
        """Normalised forecasts made `step` rows ahead (0 = next row) from every origin: [N, C]."""
        return (self.y[:, step].astype(np.float64) - self.mean) / self.std

    def errors(self, step: int):
        """Errors [N−1−step, C] of the forecasts `step` rows ahead, NaN where the origin is not scored
        or the target is unknown."""
        n = len(self.actual) - 1 - step
        err = self.at(step)[:n] - self.actual[1 + step:]
        err[~self.ok[:n]] = np.nan
        return err

    def by_horizon(self, horizons):
        """{H: (mse, mae, repeat-last mse, origins)} over origins t ≤ N−1−H, steps 1..H."""
        n = len(self.actual)
        horizons = [h for h in horizons if h <= self.horizon and h < n]
        sums = {h: np.zeros(4) for h in horizons}          # Σ se, Σ ae, Σ se (repeat-last), count
        for step in range(max(horizons, default=0)):
            e = self.errors(step)
            r = self.actual[:len(e)] - self.actual[1 + step:]
            ok = np.isfinite(e) & np.isfinite(r)
            se, ae, re = (np.cumsum(np.where(ok, v, 0.0).sum(1)) for v in (e * e, np.abs(e), r * r))
            count = np.cumsum(ok.sum(1))
            for h in horizons:
                if step < h:
                    last = n - 1 - h                            # the last origin with all h targets
                    sums[h] += (se[last], ae[last], re[last], count[last])
        return {h: (s[0] / s[3], s[1] / s[3], s[2] / s[3], int(s[3] // (h * len(self.names))))
                for h, s in sums.items() if s[3] > 0}


def metric(rec, res, meta) -> dict | None:
    if len(res.y) != len(rec) or res.resampled_to_hz is not None:
        return None  # rows are not the model's steps: a horizon in rows would not be one in steps
    f = Forecasts(rec, res, meta)
    table = f.by_horizon(sorted({h for h in REPORTED if h <= f.horizon} | {f.horizon}))
    return {"horizon": f.horizon, "channels": f.names, "space": "normalised (bundle's train statistics)",
            "by_horizon": {str(h): {"mse": mse, "mae": mae, "repeat_last_mse": rl, "origins": k}
                           for h, (mse, mae, rl, k) in table.items()}}


def summary_lines(metric: dict) -> list[str]:
    lines = []
    for i, (h, m) in enumerate(metric["by_horizon"].items()):
        label = "forecast" if i == 0 else ""
        lines.append(f"{label:<12}H={h:<4} MSE {m['mse']:.4f}  MAE {m['mae']:.4f}  (repeat-last MSE "
                     f"{m['repeat_last_mse']:.4f}) over {m['origins']:,} origins")
    if lines:
        lines.append(f"{'':<12}{len(metric['channels'])} channel(s), {metric['space']}, steps 1..H averaged")
    return lines


def plot(rec, res, path, title: str, metric, meta) -> None:
    """Top: the last channel (OT for ETT) and its forecast 1 and H/… steps ahead over the whole
    recording; middle: the last 3 horizons with fans of forecasts from 4 origins; bottom: error by step."""
    from matplotlib.figure import Figure
    f = Forecasts(rec, res, meta)
    c = len(f.names) - 1
    raw = f.actual[:, c] * f.std[c] + f.mean[c]
    rows = np.arange(len(raw))
    fig = Figure(figsize=(12, 9), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(3, 1)
    ax1.plot(rows, raw, color="k", lw=0.8, label=f"{f.names[c]} actual")
    for step in sorted({1, min(24, f.horizon)}):
        ahead = np.full(len(raw), np.nan)
        ahead[step:] = np.where(f.ok[:-step], f.y[:-step, step - 1, c], np.nan)
        ax1.plot(rows, ahead, lw=0.8, alpha=0.8, label=f"forecast made {step} row(s) earlier")
    ax1.set_title(title, fontsize=10)
    ax1.set_xlabel("row")
    ax1.legend(fontsize=8, loc="upper right")

    start = max(0, len(raw) - 3 * f.horizon - 1)
    ax2.plot(rows[start:], raw[start:], color="k", lw=1.0, label="actual")
    for t in np.linspace(start, max(start, len(raw) - 1 - f.horizon // 2), 4).astype(int):
        if f.ok[t]:
            steps = rows[t + 1:t + 1 + f.horizon]
            ax2.plot(steps, f.y[t, :len(steps), c], lw=1.2, label=f"forecast from row {t}")
            ax2.axvline(t, color="grey", lw=0.5, ls=":")
    ax2.set_xlabel("row")
    ax2.set_ylabel(f.names[c])
    ax2.legend(fontsize=8, loc="upper left")

    steps = np.arange(1, min(f.horizon, len(raw) - 1) + 1)
    ours, last = np.empty(len(steps)), np.empty(len(steps))
    for s in steps:
        e = f.errors(s - 1)
        r = f.actual[:len(e)] - f.actual[s:]
        good = np.isfinite(e) & np.isfinite(r)
        ours[s - 1], last[s - 1] = np.mean(e[good] ** 2), np.mean(r[good] ** 2)
    ax3.plot(steps, ours, label="ours")
    ax3.plot(steps, last, label="repeat-last")
    ax3.set_xlabel("steps ahead")
    ax3.set_ylabel("MSE, all channels (normalised)")
    if metric:
        h, m = list(metric["by_horizon"].items())[-1]
        ax3.set_title(f"H={h}: MSE {m['mse']:.3f} vs repeat-last {m['repeat_last_mse']:.3f}", fontsize=9)
    ax3.legend(fontsize=8)
    ax3.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
