"""`edge replay FILE --model BUNDLE --detector CONFIG`: anomaly events on the replayed signal.

The detector (`edge.tasks.anomaly.detector`, a shipped configuration such as ``anomaly-ett`` or a .json
path) reads the channels the bundle reads, in the bundle's units, one sample at a time. Its
residuals come from the bundle when it is a forecaster (task ``forecast``, horizon-major outputs
whose first ``C`` values are the next sample of its ``C`` inputs: the forecast made at sample t-1
is the one sample t is judged against), else from the detector's own online AR forecaster, so any
bundle's inputs can be watched. Samples the replay did not feed (NaN) are not fed to it either.
"""
from __future__ import annotations

import math

import numpy as np

from edge.tasks.anomaly.detector import AnomalyDetector, load_config

SUMMARY_KEY = "anomaly"  # the replay summary's key for what this overlay found
MAX_LISTED = 8          # events listed in the text summary; all of them are in --json
MAX_PLOTTED = 7         # channels drawn
MAX_ANNOTATED = 3       # events per channel labelled with their score (the highest)


def add_replay_arguments(group) -> None:
    group.add_argument("--detector", default=None, metavar="CONFIG",
                       help="also mark anomaly events (edge.tasks.anomaly.detector) on the bundle's input channels: "
                            "a shipped configuration (anomaly-ett, anomaly-ettm, anomaly-imu) or a .json file; the "
                            "summary lists the events, --plot draws them on the signal")


def wanted(args) -> bool:
    return bool(getattr(args, "detector", None))


def check(args) -> None:
    """Fail early, with one line, on a configuration that cannot be loaded."""
    load_config(args.detector)


def forecasts(res, meta) -> np.ndarray | None:
    """[N, C] one-step-ahead forecasts of the inputs from a forecast bundle's outputs, or None."""
    C, names = len(meta["inputs"]), res.output_names
    if meta.get("task") != "forecast" or len(names) < C or len(names) % C:
        return None
    f = np.full((len(res.y), C), np.nan)
    f[1:] = res.y[:-1, :C]
    return f


def metric(rec, res, meta, args) -> dict:
    """The events of the whole replay, with their times, as a JSON-friendly dict."""
    from edge.io.channels import select_inputs
    config, doc = load_config(args.detector)
    names = [str(c["name"]) for c in meta["inputs"]]
    x = select_inputs(rec, meta, meta.get("name") or "bundle").astype(np.float64)
    x[res.held] = np.nan
    f = forecasts(res, meta)
    det = AnomalyDetector(config, names)
    events = det.run(x, f)[0] + det.close()
    t0 = float(res.t[0]) if len(res.t) else 0.0
    hours = (float(res.t[-1]) - t0) / 3600 if len(res.t) > 1 else 0.0
    listed = [{**e.as_dict(), "t_start": float(res.t[e.start] - t0), "t_end": float(res.t[e.end - 1] - t0)}
              for e in sorted(events, key=lambda e: (e.start, e.channel))]
    return {"detector": config.name, "tuned_for": doc.get("description"),
            "residuals": "the bundle's one-step forecast" if f is not None
            else f"the detector's online AR({config.order}) forecaster",
            "events": listed, "count": len(events),
            "channels_with_events": sorted({e.name for e in events}, key=names.index),
            "per_hour": len(events) / hours if hours > 0 else None,
            "not_fed": {n: int(m) for n, m in zip(names, det.missing) if m}}


def summary_lines(m: dict) -> list[str]:
    rate = f", {m['per_hour']:.3g} per hour" if m["per_hour"] is not None else ""
    lines = [f"{'anomaly':<12}{m['detector']} on residuals of {m['residuals']}: {m['count']} event(s)"
             + (f" on {', '.join(m['channels_with_events'])}" if m["count"] else "") + rate]
    for e in m["events"][:MAX_LISTED]:
        lines.append(f"{'':<12}{e['name']:<8} {_fmt_t(e['t_start'])} – {_fmt_t(e['t_end'])} (samples {e['start']}–"
                     f"{e['end'] - 1}), peak {e['score']:.1f}σ, {e['cause']}")
    if m["count"] > MAX_LISTED:
        lines.append(f"{'':<12}... and {m['count'] - MAX_LISTED} more (all in --json)")
    return lines


def _fmt_t(s: float) -> str:
    if s >= 2 * 86400:
        return f"{s / 86400:.2f} d"
    return f"{s / 3600:.2f} h" if s >= 2 * 3600 else f"{s:.2f} s"


def plot(rec, res, path, title: str, m: dict, meta) -> None:
    """The input channels over time, events shaded on their channel with their peak score."""
    from matplotlib.figure import Figure

    from edge.io.channels import select_inputs
    from edge.replay import MAX_PLOT_POINTS
    names = [str(c["name"]) for c in meta["inputs"]][:MAX_PLOTTED]
    x = select_inputs(rec, meta, meta.get("name") or "bundle")
    span = float(res.t[-1] - res.t[0]) if len(res.t) > 1 else 0.0
    unit, div = ("d", 86400.0) if span >= 2 * 86400 else ("h", 3600.0) if span >= 2 * 3600 else ("s", 1.0)
    t = (res.t - res.t[0]) / div
    step = max(1, math.ceil(len(t) / MAX_PLOT_POINTS))
    fig = Figure(figsize=(11, 1.6 * len(names) + 0.9), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(names), 1, sharex=True))
    for c, (ax, name) in enumerate(zip(axes, names)):
        ax.plot(t[::step], x[::step, c], lw=0.8, color=f"C{c}")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        mine = [e for e in m["events"] if e["channel"] == c]
        for k, e in enumerate(mine):
            ax.axvspan(e["t_start"] / div, max(e["t_end"], e["t_start"] + span / 500) / div, color="tab:red",
                       alpha=0.25, lw=0, label=f"{len(mine)} event(s)" if k == 0 else None)
        for e in sorted(mine, key=lambda e: -e["score"])[:MAX_ANNOTATED]:     # more would overprint
            ax.annotate(f"{e['score']:.0f}σ {e['cause']}", (e["t_start"] / div, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, color="tab:red", va="top")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel(f"time [{unit}]")
    fig.suptitle(f"{title} — {m['detector']}: {m['count']} event(s) on residuals of {m['residuals']}", fontsize=10)
    fig.savefig(path)
