"""The one resampler: linear interpolation onto the grid ``t0 + k / rate_hz``, one chunk at a time.

`edge.io.recordings.resample` (a whole recording), `edge replay` and the daemon (one device's
messages) all push through `StreamResampler`, so a grid sample is the same, bit for bit, whether
the stream arrives whole, in chunks of 7 samples or one sample per message. Cost: O(samples).

Rules (the documented ones of `edge.io.recordings`, applied across chunk edges):

* ``t0`` is the first sample's time; grid point 0 is the first sample itself.
* A grid point ``g`` in ``(t_prev, t]`` is emitted when the sample at ``t`` arrives (so a point just
  after the last sample never is): the two samples around it, ``f = (g - t_i) / (t_{i+1} - t_i)``
  clipped to [0, 1], the end points taken as they are.
* It is NaN where a neighbour is non-finite (NaN propagates per channel), and blank in every
  channel when it lies strictly inside a time jump of more than ``gap_s`` between two fed
  samples (a gap is not bridged). "Fed" is finite in every pushed channel unless the caller says
  which samples are fed (``fed=``: e.g. a recording whose extra channels may be NaN).
"""
from __future__ import annotations

import math

import numpy as np


class StreamResampler:
    """Per-stream state: the grid origin, the next grid index, the previous sample, whether it was
    fed, and whether the latest grid point was fed (a few floats, saved with the daemon's checkpoint
    as `to_dict`)."""

    def __init__(self, rate_hz: float, gap_s: float, t0: float = math.nan, k: int = 0,
                 prev_t: float = math.nan, prev_x=None, last_fed: bool = False, prev_fed: bool | None = None):
        self.rate_hz, self.gap_s = float(rate_hz), float(gap_s)
        self.t0, self.k = float(t0), int(k)            # grid points 0..k-1 are out
        self.prev_t = float(prev_t)
        self.prev_x = None if prev_x is None else np.asarray(prev_x, np.float32)     # [C]
        self.prev_fed = (bool(np.isfinite(self.prev_x).all()) if self.prev_x is not None else False) \
            if prev_fed is None else bool(prev_fed)
        self.last_fed = bool(last_fed)                  # grid point k-1 has finite values
        self.pushed = 0                                 # samples pushed so far (for `neighbours`)

    def push(self, t, x, fed=None):
        """t [n] increasing and later than every pushed time; x [n, C] float32, NaN allowed; ``fed``
        [n] bool (default: finite in every channel).

        Returns (k [m] grid indices, tg [m], xg [m, C] float32 with NaN rows for blank points,
        j [n] the latest grid index at or before each t, lag [n] = t - tg[j], fed_j [n] bool).
        ``self.neighbours`` is (i [m], f [m], blank [m]) of the last push: grid point r lies between
        pushed samples i[r] and i[r] + 1 (counted from this object's first push) at fraction f[r]."""
        t = np.asarray(t, np.float64)
        x = np.asarray(x, np.float32)
        fed = np.isfinite(x).all(axis=1) if fed is None else np.asarray(fed, bool)
        k_before, first = self.k, self.prev_x is None
        base = self.pushed - 1                          # the stream index of tt[0]
        self.pushed += len(t)
        if first:                                       # grid point 0 is the first sample itself (f = 0)
            self.t0, self.prev_t, self.prev_x, self.prev_fed, self.k = float(t[0]), float(t[0]), x[0], bool(fed[0]), 1
            t, x, fed = t[1:], x[1:], fed[1:]
            base += 1
        tt = np.concatenate(([self.prev_t], t))                            # [n + 1]: the left neighbour first
        xx = np.concatenate((self.prev_x[None], x)).astype(np.float64)     # [n + 1, C]
        ok = np.concatenate(([self.prev_fed], fed))
        k1 = int(math.floor((tt[-1] - self.t0) * self.rate_hz + 1e-9)) + 1
        ks = np.arange(self.k, max(k1, self.k))
        tg = self.t0 + ks.astype(np.float64) / self.rate_hz
        keep = tg <= tt[-1]                 # a point just after the last sample needs the next one
        ks, tg = ks[keep], tg[keep]
        # the last sample at or before g, f clipped, the end points taken as they are
        i = np.clip(np.searchsorted(tt, tg, side="right") - 1, 0, len(tt) - 2)
        f = np.clip((tg - tt[i]) / (tt[i + 1] - tt[i]), 0.0, 1.0)
        x0, x1 = xx[i], xx[i + 1]
        with np.errstate(invalid="ignore"):         # inf - inf next to a non-finite sample: NaN, as wanted
            xg = np.where((f <= 0.0)[:, None], x0, np.where((f >= 1.0)[:, None], x1, x0 + f[:, None] * (x1 - x0)))
        # a time jump between two fed samples is a gap: blank what lies strictly inside it
        jump = ok[:-1] & ok[1:] & (np.diff(tt) > self.gap_s)
        blank = jump[i] & (tg > tt[i]) & (tg < tt[i + 1])
        xg[blank] = np.nan
        xg = xg.astype(np.float32)
        gi = base + i
        if first:
            ks = np.concatenate(([0], ks))
            tg = np.concatenate(([self.t0], tg))
            xg = np.concatenate((xx[:1].astype(np.float32), xg))
            t = np.concatenate(([self.t0], t))
            gi, f, blank = np.concatenate(([0], gi)), np.concatenate(([0.0], f)), np.concatenate(([False], blank))
        self.neighbours = (gi, f, blank)

        fed_g = np.isfinite(xg).all(axis=1)
        # the latest grid point at or before each t: position 0 is the last one of earlier pushes
        tk = np.concatenate(([self.t0 + (k_before - 1) / self.rate_hz], tg))
        fk = np.concatenate(([self.last_fed], fed_g))
        p = np.searchsorted(tg, t, side="right")
        j, tj, fed_j = k_before - 1 + p, tk[p], fk[p]
        if len(ks):
            self.k, self.last_fed = int(ks[-1]) + 1, bool(fed_g[-1])
        self.prev_t, self.prev_x, self.prev_fed = float(tt[-1]), xx[-1].astype(np.float32), bool(ok[-1])
        return ks, tg, xg, j, t - tj, fed_j

    def to_dict(self) -> dict:
        return {"rate_hz": self.rate_hz, "gap_s": self.gap_s, "t0": self.t0, "k": self.k, "prev_t": self.prev_t,
                "prev_x": None if self.prev_x is None else [float(v) for v in self.prev_x],
                "last_fed": self.last_fed, "prev_fed": self.prev_fed}

    @classmethod
    def from_dict(cls, d: dict) -> "StreamResampler":
        return cls(**d)
