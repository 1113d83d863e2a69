"""A streaming novelty detector for one series: how much of what the latest rows look like was never
seen before, discounted by how often things have been new lately. Causal (a row's score depends on
it and the rows before it only), O(1) time and fixed memory per row.

    det = NoveltyDetector(NoveltyConfig())
    for x in stream:
        score = det.step(x)                       # in [0, 1], emitted as the row arrives
    scores = NoveltyDetector(NoveltyConfig()).run(values)   # a block: the same loop

Each row:

1. **Quantise.** The range ``[lo, hi]`` is the span of the first ``calibration`` rows; the value is
   put into one of ``bins · r`` equal bins over that range widened by ``margin`` on either side, for
   each resolution r = 1..``resolutions`` (a value outside the widened range falls in an overflow bin
   on its side, which is novel the first time).
2. **Contexts.** For each resolution and each k = 1..``orders``, the last k bins form a context,
   hashed into a fixed table of ``TABLE_SLOTS`` seen-flags (1 MiB; a collision can only hide a
   novelty, never invent one). The row's novelty ``s`` is the fraction of its contexts not seen
   before; they are marked seen.
3. **Surprise.** ``score = s · (1 − m)^gamma`` with ``m`` a running mean of s (exact over the
   calibration rows, then an EWMA with half-life ``halflife`` rows): novelty in a stream where
   nothing has been new for a while counts, a stream that is new all the time does not.
4. **Refractory.** A score of at least ``alarm`` is an alarm; for the next ``refractory`` rows the
   score is halved (so one anomaly is one detection at any threshold above ``alarm / 2``).

No score in the ``calibration`` rows (0). Bad input by rule: a non-finite value is not fed (state
held, score 0) and counted in ``missing``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

TABLE_SLOTS = 1 << 20
MAX_ORDER = 8
_FNV_OFFSET, _FNV_PRIME = 1469598103934665603, 1099511628211


@dataclass(frozen=True)
class NoveltyConfig:
    bins: int = 4               # bins over the calibration range at the coarsest resolution
    resolutions: int = 1        # resolutions bins, 2·bins, ...
    calibration: int = 400      # rows that fix the range and learn before any score
    margin: float = 0.3         # the range is widened by this fraction of itself on either side
    orders: int = 2             # contexts of the last 1..orders bins
    halflife: float = 10.0      # rows, the running mean of novelty after calibration
    gamma: float = 4.0          # how strongly recent novelty discounts a new one
    alarm: float = 0.3          # score that is an alarm
    refractory: int = 2500      # rows after an alarm whose scores are halved

    def __post_init__(self):
        checks = [("bins", self.bins >= 1), ("resolutions", self.resolutions >= 1),
                  ("calibration", self.calibration >= 2), ("margin", self.margin >= 0),
                  ("orders", 1 <= self.orders <= MAX_ORDER), ("halflife", self.halflife >= 1),
                  ("gamma", self.gamma >= 0), ("alarm", 0 < self.alarm <= 1), ("refractory", self.refractory >= 0)]
        bad = [k for k, ok in checks if not ok]
        if bad:
            raise ValueError(f"novelty detector: bad value for {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    def as_dict(self) -> dict:
        return asdict(self)


class NoveltyDetector:
    """One stream's detector (see the module docstring); state is fixed-size (`state_bytes`)."""

    def __init__(self, config: NoveltyConfig = NoveltyConfig()):
        self.config = config
        self.seen = np.zeros(TABLE_SLOTS, np.uint8)
        self.history = np.zeros((config.resolutions, MAX_ORDER), np.int64)
        self.f = np.array([np.inf, -np.inf, 0.0])        # lo, hi, running mean of novelty
        self.i = np.zeros(3, np.int64)                     # rows fed, refractory rows left, missing
        self._k = np.array([config.bins, config.resolutions, config.calibration, config.margin, config.orders,
                            1.0 - 0.5 ** (1.0 / config.halflife), config.gamma, config.alarm, config.refractory])

    @property
    def missing(self) -> int:
        return int(self.i[2])

    def state_bytes(self) -> int:
        return sum(a.nbytes for a in (self.seen, self.history, self.f, self.i))

    def step(self, x: float) -> float:
        return float(self.run(np.array([x], dtype=np.float64))[0])

    def run(self, values) -> np.ndarray:
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"novelty detector: a block of one series has shape (T,), got {values.shape}")
        out = np.empty(len(values))
        _advance(values, self._k, self.seen, self.history, self.f, self.i, out)
        return out


@njit(cache=True)
def _advance(values, k, seen, history, f, i, out):
    bins, resolutions, calibration, margin, orders = int(k[0]), int(k[1]), int(k[2]), k[3], int(k[4])
    alpha, gamma, alarm, refractory = k[5], k[6], k[7], int(k[8])
    for s in range(len(values)):
        x = values[s]
        if not np.isfinite(x):
            i[2] += 1
            out[s] = 0.0
            continue
        t = i[0]
        i[0] = t + 1
        if t < calibration:
            f[0], f[1] = min(f[0], x), max(f[1], x)
        span = f[1] - f[0]
        if span <= 0.0:                  # a flat start: a range of 10 % of the level (or 1e-9)
            span = max(0.1 * abs(f[1]), 1e-9)
        novel, contexts = 0.0, 0
        for r in range(resolutions):
            width = bins * (r + 1)
            b = math.floor((x - f[0]) / span * width + margin * width)
            b = min(max(b, -1.0), math.floor(width * (1.0 + 2.0 * margin)) + 1.0)
            for j in range(MAX_ORDER - 1, 0, -1):
                history[r, j] = history[r, j - 1]
            history[r, 0] = int(b)
            h = np.uint64(_FNV_OFFSET + r)
            for j in range(orders):
                h = (h ^ np.uint64(history[r, j] + 1000)) * np.uint64(_FNV_PRIME)
                if t >= j:               # a context of j + 1 rows needs j rows before this one
                    slot = int((h ^ np.uint64(7 * j + r)) % np.uint64(TABLE_SLOTS))
                    contexts += 1
                    if seen[slot] == 0:
                        novel += 1.0
                        seen[slot] = 1
        novelty = novel / max(contexts, 1)
        score = novelty * (1.0 - f[2]) ** gamma
        f[2] += (novelty - f[2]) * (alpha if t >= calibration else 1.0 / (t + 1))
        if t < calibration:
            out[s] = 0.0
        elif i[1] > 0:
            i[1] -= 1
            out[s] = 0.5 * score
        else:
            out[s] = score
            if score >= alarm:
                i[1] = refractory
