"""Anomalies injected into real streams, with exact labels.

    from edge.tasks.anomaly.inject import inject_many
    x_bad, labels = inject_many(x, np.random.default_rng(0), lengths={"level_shift": 24, ...})

Each label is one `Injected(kind, channel, start, end, magnitude)`: samples [start, end) of one
channel were changed, nothing else. Magnitudes are in units of the channel's standard deviation σ
over the whole stream (NaN ignored), so that "a 4σ spike" means the same on every sensor:

* ``spike``: one sample (or ``length``) + m·σ.
* ``level_shift``: + m·σ over the interval, then back (a loose connector, a recalibration undone).
* ``drift``: + m·σ·(k+1)/L on the k-th of L samples: a linear ramp from 0 to m·σ, then back.
* ``stuck``: the value at ``start`` held over the interval (a frozen reading: exact repeats).
* ``dropout``: the sensor reads 0.0 over the interval (a dead channel that still reports).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("spike", "level_shift", "drift", "stuck", "dropout")
# |m| drawn uniformly from these ranges (σ of the channel), with a random sign; none for stuck/dropout
MAGNITUDES = {"spike": (3.0, 6.0), "level_shift": (1.0, 3.0), "drift": (2.0, 4.0)}


@dataclass(frozen=True)
class Injected:
    """One injected anomaly: samples [start, end) of `channel`, `magnitude` in σ (0 where none)."""
    kind: str
    channel: int
    start: int
    end: int
    magnitude: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def inject(x, label: Injected, sigma: float) -> None:
    """Apply one anomaly to x [T, C] in place."""
    s, e, c, m = label.start, label.end, label.channel, label.magnitude
    if label.kind in ("spike", "level_shift"):
        x[s:e, c] += m * sigma
    elif label.kind == "drift":
        x[s:e, c] += m * sigma * np.arange(1, e - s + 1) / (e - s)
    elif label.kind == "stuck":
        x[s:e, c] = x[s, c]
    elif label.kind == "dropout":
        x[s:e, c] = 0.0
    else:
        raise ValueError(f"unknown anomaly kind {label.kind!r}; known: {', '.join(KINDS)}")


def inject_many(x, rng: np.random.Generator, lengths: dict, *, spacing: int, first: int = 0,
                kinds=KINDS, channels=None, avoid=None) -> tuple[np.ndarray, list[Injected]]:
    """Inject anomalies into a copy of x [T, C], one every ``spacing`` samples from ``first`` on,
    kinds in turn (so every kind is equally represented), each on a random channel of ``channels``
    (default all) at a random offset inside its slot, with a random magnitude (`MAGNITUDES`).

    ``lengths``: samples per kind (a spike defaults to 1). ``avoid``: a [T] bool mask of samples
    that must stay untouched (e.g. real faults in the data), and a slot whose interval would touch
    one is skipped. A stuck or dropout interval over values that would not change (already
    constant, or already 0) is skipped too: every label is a real change of the data.
    Returns (x with anomalies, labels sorted by start)."""
    x = np.array(x, dtype=np.float64)
    T, C = x.shape
    channels = list(range(C)) if channels is None else list(channels)
    sigma = np.nanstd(x, axis=0)
    labels, k = [], 0
    for slot in range(first, T - spacing + 1, spacing):
        kind = kinds[k % len(kinds)]
        L = int(lengths.get(kind, 1))
        if L >= spacing:
            raise ValueError(f"inject_many: {kind} lasts {L} samples, longer than the spacing {spacing}")
        start = slot + int(rng.integers(0, spacing - L))
        c = int(channels[rng.integers(len(channels))])
        lo, hi = MAGNITUDES.get(kind, (0.0, 0.0))
        m = float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])) if hi else 0.0
        seg = x[start:start + L, c]
        touched = avoid is not None and avoid[max(start - 1, 0):start + L + 1].any()
        unchanged = (kind == "stuck" and np.all(seg == seg[0])) or (kind == "dropout" and np.all(seg == 0.0))
        if touched or unchanged or not np.all(np.isfinite(seg)):
            continue
        label = Injected(kind, c, start, start + L, m)
        inject(x, label, sigma[c])
        labels.append(label)
        k += 1
    return x, labels
