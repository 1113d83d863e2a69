"""`edge.io.recordings.resample`, one message at a time: the grid a live device is fed on.

A stream is resampled linearly onto the grid ``t0 + k / rate_hz`` (``t0``: its first sample) with
the formulas of `resample`, so the grid samples equal, bit for bit, those of resampling the whole
stream at once. A grid point ``g`` in ``(t_prev, t]`` is known as soon as the sample at ``t``
arrives; it is NaN when a neighbour is non-finite or when the two neighbours are more than
``gap_s`` apart (a gap is not bridged). The only difference from the offline grid: a grid point
within ``1e-9 / rate_hz`` after an input time (float rounding of an exact coincidence) maps to the
next input sample here, to that one offline, because its value needs the next sample.
"""
from __future__ import annotations

import math

import numpy as np


class StreamResampler:
    """Per-device state: the grid origin, the next grid index, the previous sample and whether the
    latest grid point was fed (a few floats, saved with the daemon's checkpoint as `to_dict`)."""

    def __init__(self, rate_hz: float, gap_s: float, t0: float = math.nan, k: int = 0,
                 prev_t: float = math.nan, prev_x=None, last_fed: bool = False):
        self.rate_hz, self.gap_s = float(rate_hz), float(gap_s)
        self.t0, self.k = float(t0), int(k)            # grid points 0..k-1 are out
        self.prev_t = float(prev_t)
        self.prev_x = None if prev_x is None else np.asarray(prev_x, np.float32)     # [C]
        self.last_fed = bool(last_fed)                  # grid point k-1 has finite values

    def push(self, t, x):
        """t [n] increasing and later than every pushed time; x [n, C] float32, NaN allowed.

        Returns (k [m] grid indices, tg [m], xg [m, C] float32 with NaN rows for blank points,
        j [n] the latest grid index at or before each t, lag [n] = t - tg[j], fed_j [n] bool)."""
        t = np.asarray(t, np.float64)
        x = np.asarray(x, np.float32)
        k_before, first = self.k, self.prev_x is None
        if first:                                       # grid point 0 is the first sample itself (f = 0)
            self.t0, self.prev_t, self.prev_x, self.k = float(t[0]), float(t[0]), x[0], 1
            t, x = t[1:], x[1:]
        tt = np.concatenate(([self.prev_t], t))                            # [n + 1]: the left neighbour first
        xx = np.concatenate((self.prev_x[None], x)).astype(np.float64)     # [n + 1, C]
        k1 = int(math.floor((tt[-1] - self.t0) * self.rate_hz + 1e-9)) + 1
        ks = np.arange(self.k, max(k1, self.k))
        tg = self.t0 + ks.astype(np.float64) / self.rate_hz
        keep = tg <= tt[-1]                 # a point just after the last sample needs the next one
        ks, tg = ks[keep], tg[keep]
        # as resample: the last sample at or before g, f clipped, the end points taken as they are
        i = np.clip(np.searchsorted(tt, tg, side="right") - 1, 0, len(tt) - 2)
        f = np.clip((tg - tt[i]) / (tt[i + 1] - tt[i]), 0.0, 1.0)
        x0, x1 = xx[i], xx[i + 1]
        with np.errstate(invalid="ignore"):         # inf - inf next to a non-finite sample: NaN, as wanted
            xg = np.where((f <= 0.0)[:, None], x0, np.where((f >= 1.0)[:, None], x1, x0 + f[:, None] * (x1 - x0)))
        # a time jump between two finite samples is a gap: blank what lies strictly inside it
        ok = np.isfinite(xx).all(axis=1)
        jump = ok[:-1] & ok[1:] & (np.diff(tt) > self.gap_s)
        xg[jump[i] & (tg > tt[i]) & (tg < tt[i + 1])] = np.nan
        xg = xg.astype(np.float32)
        if first:
            ks = np.concatenate(([0], ks))
            tg = np.concatenate(([self.t0], tg))
            xg = np.concatenate((xx[:1].astype(np.float32), xg))
            t = np.concatenate(([self.t0], t))

        fed_g = np.isfinite(xg).all(axis=1)
        # the latest grid point at or before each t: position 0 is the last one of earlier pushes
        tk = np.concatenate(([self.t0 + (k_before - 1) / self.rate_hz], tg))
        fk = np.concatenate(([self.last_fed], fed_g))
        p = np.searchsorted(tg, t, side="right")
        j, tj, fed_j = k_before - 1 + p, tk[p], fk[p]
        if len(ks):
            self.k, self.last_fed = int(ks[-1]) + 1, bool(fed_g[-1])
        self.prev_t, self.prev_x = float(tt[-1]), xx[-1].astype(np.float32)
        return ks, tg, xg, j, t - tj, fed_j

    def to_dict(self) -> dict:
        return {"rate_hz": self.rate_hz, "gap_s": self.gap_s, "t0": self.t0, "k": self.k, "prev_t": self.prev_t,
                "prev_x": None if self.prev_x is None else [float(v) for v in self.prev_x],
                "last_fed": self.last_fed}

    @classmethod
    def from_dict(cls, d: dict) -> "StreamResampler":
        return cls(**d)
