"""`edge replay` view of a classification bundle (task "classification"): the class decided at the
end and since when it holds, accuracy against a ``label`` column when the recording has one, and a
plot of the class probabilities over time under the signal.

A ``label`` column holds the true class of each sample as an index into the bundle's outputs
(0 = the first output name); an empty cell (NaN) marks an unlabelled sample, which is not scored.
"""
from __future__ import annotations

import numpy as np

from edge.runtime import InputError

LABEL = "label"


def labels(rec, classes: int) -> np.ndarray | None:
    """The ``label`` column as int64 class indices (−1 where unlabelled), or None without one."""
    if LABEL not in rec.channels:
        return None
    v = rec.x[:, rec.index(LABEL)].astype(np.float64)
    known = np.isfinite(v)
    bad = known & ((v != np.round(v)) | (v < 0) | (v >= classes))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputError(f"{rec.source or 'recording'}: column {LABEL!r}, sample {k}: {v[k]:g} is not a class index "
                         f"0..{classes - 1} ({int(bad.sum())} such samples)")
    return np.where(known, v, -1).astype(np.int64)


def decided_since(pred: np.ndarray) -> int:
    """First sample of the final run of equal predictions: from there on the decision never changes."""
    changes = np.flatnonzero(pred[1:] != pred[:-1])
    return int(changes[-1] + 1) if changes.size else 0


def metric(rec, res, meta) -> dict | None:
    classes = [str(o["name"]) for o in meta["outputs"]]
    have = np.all(np.isfinite(res.y), axis=1)  # rows before the first output (if any) have none
    if not have.any():
        return None
    rows = np.flatnonzero(have)
    pred = res.y[rows].argmax(1)
    last = rows[-1]
    since = rows[decided_since(pred)]
    out = {"classes": classes, "final_class": classes[pred[-1]], "final_probability": float(res.y[last].max()),
           "decided_since_s": float(res.t[since] - res.t[0]), "duration_s": float(res.t[-1] - res.t[0])}
    truth = labels(rec, len(classes))
    if truth is None:
        return out
    scored = truth[rows] >= 0
    if not scored.any():
        return {**out, "labelled_samples": 0}
    hit = pred[scored] == truth[rows][scored]
    correct_from = rows[scored][decided_since(hit)] if hit[-1] else None
    return {**out, "labelled_samples": int(scored.sum()),
            "label_at_end": classes[truth[last]] if truth[last] >= 0 else None,
            "correct_at_end": bool(truth[last] >= 0 and pred[-1] == truth[last]),
            "accuracy_over_time": float(hit.mean()),
            "correct_from_s": None if correct_from is None else float(res.t[correct_from] - res.t[0])}


def summary_lines(m: dict) -> list[str]:
    lines = [f"class       {m['final_class']} (p = {m['final_probability']:.2f}) at the end; the decision holds "
             f"since {m['decided_since_s']:.1f} s of {m['duration_s']:.1f} s"]
    if "labelled_samples" not in m:
        return lines
    if not m["labelled_samples"]:
        return lines + ["accuracy    n/a: the label column is empty"]
    end = ("not labelled" if m["label_at_end"] is None else
           "correct" if m["correct_at_end"] else f"wrong (label {m['label_at_end']})")
    since = "" if m["correct_from_s"] is None else f"; right from {m['correct_from_s']:.1f} s on"
    return lines + [f"accuracy    at the end: {end}; over time {100 * m['accuracy_over_time']:.1f} % of "
                    f"{m['labelled_samples']:,} labelled samples{since}"]


def plot(rec, res, path, title: str, metric: dict | None, meta) -> None:
    """The inputs (one panel per unit: acceleration, angular rate) above the class probabilities."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = [str(o["name"]) for o in meta["outputs"]]
    t = res.t - res.t[0]
    by_unit: dict[str, list[str]] = {}
    for c in meta["inputs"]:
        if str(c["name"]) in rec.channels:
            by_unit.setdefault(str(c.get("unit") or ""), []).append(str(c["name"]))
    fig = Figure(figsize=(10, 3 + 2 * len(by_unit)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(by_unit) + 1, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [1] * len(by_unit) + [1.6]})[:, 0]
    for ax, (unit, names) in zip(axes, by_unit.items()):
        for name in names:
            ax.plot(t, rec.x[:, rec.index(name)], lw=0.6, label=name)
        ax.set_ylabel(unit or "input")
        ax.legend(loc="upper right", ncol=len(names), fontsize=7)
    axes[0].set_title(title)
    prob = axes[-1]
    for k, name in enumerate(classes):
        prob.plot(t, res.y[:, k], lw=1.2, label=name)
    truth = labels(rec, len(classes))
    if truth is not None and (truth >= 0).any():
        # the true class drawn as a band at the top: where it is, its colour is the class's line colour
        colors = [line.get_color() for line in prob.get_lines()]
        for k in np.unique(truth[truth >= 0]):
            prob.fill_between(t, 1.02, 1.08, where=truth == k, color=colors[k], step="mid", lw=0)
        prob.text(t[0], 1.09, "label (true class)", fontsize=7, va="bottom")
    if metric:
        prob.axvline(metric["decided_since_s"], color="grey", ls=":", lw=1)
    prob.set_ylim(0, 1.15)
    prob.set_ylabel("class probability")
    prob.set_xlabel("time (s)")
    prob.legend(loc="center right", fontsize=8)
    prob.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
