"""Streaming anomaly events on forecast residuals: O(1) memory per channel, one event per anomaly.

    from edge.tasks.anomaly.detector import AnomalyDetector
    det = AnomalyDetector.load("anomaly-ett", channels=["HUFL", ..., "OT"])
    for x in stream:                           # x [C], one sample
        for ev in det.step(x):                 # events are emitted when they close
            print(ev)
    events = det.close()                       # the end of the stream closes what is open

    events, score = det.run(X)                 # a block X [T, C]: the same `step`, sample by sample

Residuals ``r_t = x_t - x̂_t`` come from any one-step-ahead forecaster: pass ``forecast=`` (a shipped
forecast bundle's first horizon step, say), or leave it out and the detector's own forecaster is used:
a recursive-least-squares AR(p) on first differences per channel (see `AnomalyDetector`), which
also serves IMU streams where no forecast bundle exists.

Four tests turn each sample into one score per channel, in σ, the highest of:

* **residual** ``|r| / σ``: spikes, level shifts, dropouts. σ = 1.2533 · a running mean of ``|r|``
  (exact mean over the warm-up, then an EWMA with half-life ``halflife``), each ``|r|`` clipped at
  ``clip · σ`` so that an anomaly cannot inflate the scale it is judged by; and σ is at least
  ``floor`` times the running mean of ``|Δx|`` (the last 200 samples), which follows a change of
  activity (an IMU starting to move) within a fraction of a second where the clipped EWMA would
  take seconds, while one spike moves it by 2 % at most.
* **drift**: a two-sided CUSUM of ``clip(r/σ, ±clip)`` with allowance ``cusum_k``; it scores
  ``enter · S / cusum_h`` and restarts at 0 after each alarm, so a slow drift alarms repeatedly
  and the hysteresis merges the alarms into one event that starts where S last left 0.
* **stuck**: a run of exactly repeated values scores ``enter · run / stuck`` (0 turns it off);
  the event starts at the first held value.
* **level**: ``|x - μ| / s`` against a slow running mean μ and deviation s of the signal itself
  (half-life ``level_halflife``; exact over the warm-up, then fed with x clipped at μ ± clip·s)
  scores ``enter · |x - μ| / (level · s)`` (0 turns it off): a value far outside the usual range,
  which is how a drift shows once a forecaster has learnt its slope.

Events (hysteresis): a channel opens an event when its score reaches ``enter`` (never in the first
``warmup`` fed samples: the scale is not known yet), and closes it once the score has stayed below
``exit`` for more than ``merge`` samples; a new crossing within that gap continues the same event,
so one spike, whose value also sits in the forecaster's lags for p samples, is one event.

Bad input, by rule: a sample must have shape ``[C]`` (``[T, C]`` for a block), otherwise ValueError
naming the shape. A NaN or ±inf value is not fed: that channel's state is held, its score is NaN,
an open event neither grows nor closes there, and ``missing[c]`` counts it; other channels go on.
Sample indices count every sample stepped, fed or not.

The per-sample loop is compiled with Numba (the runtime's own dependency): a numpy version of it
spends its time in the overhead of dozens of tiny array calls per sample. `bench/anomaly_detector.py`
times it beside the attitude bundle.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from numba import njit

from edge.bundle import BUNDLE_DIR
from edge.runtime import InputError

GAUSS_MAD = math.sqrt(math.pi / 2)        # σ / E|r| for Gaussian residuals
CAUSES = ("residual", "drift", "stuck", "level")
P0 = 100.0                                # initial RLS covariance (regressors are in units of their scale)
P_TRACE_MAX = 1e6                         # RLS covariance bound: no blow-up while a channel is flat
DSCALE_MEMORY = 200                       # samples in the running mean |Δx| that scales the AR regressors


class ConfigError(InputError):
    """A detector configuration that cannot be used; the message names the file and the field
    (an InputError: the command line reports it as one line, exit code 2)."""


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that decides what is an event. Thresholds are in σ of the residual."""
    name: str = "anomaly"
    order: int = 8            # AR order of the built-in forecaster (on first differences)
    forget: float = 0.999     # RLS forgetting factor: memory of about 1/(1-forget) samples
    halflife: float = 500.0   # samples, residual-scale EWMA after the warm-up
    warmup: int = 200         # fed samples per channel before any event
    enter: float = 6.0        # score that opens an event
    exit: float = 3.0         # score below which an event may close
    merge: int = 10           # an event closes after more than this many samples below `exit`
    clip: float = 4.0         # residuals are clipped at clip·σ for the scale, the CUSUM and the RLS
    cusum_k: float = 0.5      # drift allowance per sample, σ
    cusum_h: float = 30.0     # drift alarm, σ·samples (0 turns the drift test off)
    stuck: int = 0            # repeated samples that make a stuck sensor (0 turns the test off)
    level: float = 0.0        # |x - μ| in slow-running s of the signal that scores `enter` (0: off)
    level_halflife: float = 5000.0   # samples, the slow running mean and deviation of the signal
    floor: float = 0.0        # σ >= floor · running mean |Δx| (0: off)

    def __post_init__(self):
        checks = [("order", self.order >= 1), ("forget", 0.9 <= self.forget <= 1.0),
                  ("halflife", self.halflife >= 1), ("warmup", self.warmup >= self.order + 1),
                  ("enter", self.enter > 0), ("exit", 0 < self.exit <= self.enter), ("merge", self.merge >= 0),
                  ("clip", self.clip >= 1), ("cusum_k", self.cusum_k >= 0), ("cusum_h", self.cusum_h >= 0),
                  ("stuck", self.stuck == 0 or self.stuck >= 2), ("level", self.level >= 0),
                  ("level_halflife", self.level_halflife >= 1), ("floor", self.floor >= 0)]
        bad = [k for k, ok in checks if not ok]
        if bad:
            raise ConfigError(f"detector config {self.name!r}: bad value for {', '.join(bad)} "
                              f"({', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}); see DetectorConfig")

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "DetectorConfig":
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown detector field(s) {', '.join(unknown)} (known: {', '.join(known)})")
        kw = {}
        for k, v in d.items():
            want = int if known[k] == "int" else float if known[k] == "float" else str
            if want is str and not isinstance(v, str) or want is not str and (
                    isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or want is int and v != int(v)):
                raise ConfigError(f"{where}: field {k} must be {want.__name__}, got {v!r}")
            kw[k] = want(v)
        try:
            return cls(**kw)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


def config_path(name_or_path) -> Path:
    """A .json path, or the name of a detector configuration shipped in edge/bundles/."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        return p
    shipped = BUNDLE_DIR / f"{name_or_path}.json"
    if not shipped.exists():
        names = sorted(q.stem for q in BUNDLE_DIR.glob("anomaly*.json"))
        raise FileNotFoundError(f"no detector configuration {name_or_path!r} (shipped: {', '.join(names)})")
    return shipped


def load_config(name_or_path) -> tuple[DetectorConfig, dict]:
    """(config, the whole JSON document) of a shipped name or a .json file."""
    path = config_path(name_or_path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read a detector configuration: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("detector"), dict):
        raise ConfigError(f"{path}: a detector configuration is a JSON object with a \"detector\" object")
    return DetectorConfig.from_dict({"name": doc.get("name", path.stem), **doc["detector"]}, str(path)), doc


@dataclass
class Event:
    """One anomaly on one channel: samples [start, end), its peak score (σ) and when it was flagged."""
    channel: int
    name: str
    start: int
    end: int
    score: float
    peak_at: int
    detected_at: int          # the sample whose score opened the event (start <= detected_at)
    cause: str                # the test that opened it: residual, drift, stuck or level

    def as_dict(self) -> dict:
        return asdict(self)


class AnomalyDetector:
    """Events from one-step-ahead residuals of ``channels`` streams (see the module docstring).

    The built-in forecaster, when no ``forecast`` is given: an AR(p) on first differences,
    x̂_t = x_{t-1} + d·Σ_i θ_i Δx_{t-i}/d, fitted online by recursive least squares with forgetting.
    ``d`` is a running mean of |Δx| (θ does not depend on it; the regularisation of P does), and
    the RLS error is clipped at ``clip``·σ so that one spike does not bend θ.

    State, all fixed-size arrays (`state_bytes`): per channel θ [p], P [p, p], p lags and a dozen
    scalars. `step` and `run` are the same compiled loop (`_advance`) over 1 or T samples."""

    def __init__(self, config: DetectorConfig, channels):
        names = [f"x{i}" for i in range(channels)] if isinstance(channels, int) else [str(c) for c in channels]
        if not names:
            raise ValueError("AnomalyDetector: at least one channel")
        self.config, self.channels = config, names
        C, p = len(names), config.order
        self.theta = np.zeros((C, p))
        self.P = np.tile(np.eye(p) * P0, (C, 1, 1))
        self.lags = np.zeros((C, p))                    # Δx_{t-1} .. Δx_{t-p}, in units of d
        self.f = np.zeros((C, _NF))                     # float scalars per channel (_F_* columns)
        self.f[:, _F_FORECAST] = np.nan
        self.i = np.zeros((C, _NI), np.int64)           # integer scalars per channel (_I_* columns)
        self.t = np.zeros(1, np.int64)                  # samples stepped
        self.score = np.full(C, np.nan)                 # the last sample's score (σ; NaN where not fed)
        cfg = config
        self._k = np.array([cfg.order, cfg.forget, 1.0 - 0.5 ** (1.0 / cfg.halflife), cfg.warmup, cfg.enter,
                            cfg.exit, cfg.merge, cfg.clip, cfg.cusum_k, cfg.cusum_h, cfg.stuck, cfg.level,
                            1.0 - 0.5 ** (1.0 / cfg.level_halflife), cfg.floor], np.float64)

    @classmethod
    def load(cls, name_or_path, channels) -> "AnomalyDetector":
        return cls(load_config(name_or_path)[0], channels)

    def state_bytes(self) -> int:
        """Bytes of state: fixed by the channel count and the AR order, not by the stream length."""
        return sum(a.nbytes for a in (self.theta, self.P, self.lags, self.f, self.i, self.t, self.score))

    @property
    def missing(self) -> np.ndarray:
        """Non-finite samples per channel (not fed)."""
        return self.i[:, _I_MISSING].copy()

    @property
    def forecast(self) -> np.ndarray:
        """The built-in forecaster's x̂ of the next sample [C] (NaN before a channel's first sample)."""
        return self.f[:, _F_FORECAST].copy()

    # ---------------------------------------------------------------------------------- streaming

    def step(self, x, forecast=None) -> list[Event]:
        """One sample x [C] (and optionally any forecaster's x̂ of it, [C]); the events it closed."""
        C = len(self.channels)
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (C,):
            raise ValueError(f"anomaly detector {self.config.name}: a sample has shape {x.shape}, expected ({C},) "
                             f"for channels {', '.join(self.channels)}")
        return self.run(x[None], None if forecast is None else np.reshape(forecast, (1, -1)))[0]

    def run(self, X, forecasts=None) -> tuple[list[Event], np.ndarray]:
        """A block X [T, C] (and optionally forecasts [T, C]): (the events closed in it, score [T, C])."""
        C = len(self.channels)
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != C:
            raise ValueError(f"anomaly detector {self.config.name}: a block has shape {X.shape}, expected (T, {C})")
        F = X if forecasts is None else np.ascontiguousarray(forecasts, dtype=np.float64)
        if F.shape != X.shape:
            raise ValueError(f"anomaly detector {self.config.name}: forecasts have shape {F.shape}, "
                             f"expected {X.shape}")
        score = np.empty(X.shape)
        out = np.empty((C * (len(X) // (self.config.merge + 2) + 1), _NE))   # an event lasts >= merge + 2 samples
        n = _advance(X, F, forecasts is not None, self._k, self.theta, self.P, self.lags, self.f, self.i, self.t,
                     score, out)
        if len(X):
            self.score[:] = score[-1]
        return [self._event(row) for row in out[:n]], score

    def close(self) -> list[Event]:
        """End of the stream: close every open event at its last sample at or above ``exit``."""
        events = self.open_events()
        self.i[:, _I_OPEN] = 0
        return events

    def open_events(self) -> list[Event]:
        """The events still open, as they stand (end = one past their last sample at or above exit)."""
        out = np.empty((len(self.channels), _NE))
        for c in range(len(self.channels)):
            _event_row(self.f, self.i, c, out[c])
        return [self._event(out[c]) for c in np.flatnonzero(self.i[:, _I_OPEN])]

    def _event(self, row) -> Event:
        c, start, end, peak_at, detected, cause, score = row
        return Event(channel=int(c), name=self.channels[int(c)], start=int(start), end=int(end), score=float(score),
                     peak_at=int(peak_at), detected_at=int(detected), cause=CAUSES[int(cause)])


# ------------------------------------------------------------------------------- compiled core

# per-channel scalars: floats in f[c, :], integers in i[c, :]
_F_LAST, _F_DSCALE, _F_FORECAST, _F_MABS, _F_SPOS, _F_SNEG, _F_PEAK, _F_MEAN, _F_VAR, _NF = range(10)
(_I_FED, _I_MISSING, _I_FROM_POS, _I_FROM_NEG, _I_RUN, _I_OPEN, _I_START, _I_DETECTED, _I_LAST_ABOVE,
 _I_PEAK_AT, _I_CAUSE, _I_QUIET, _NI) = range(13)
_NE = 7               # an event row: channel, start, end, peak_at, detected_at, cause, score


@njit(cache=True)
def _event_row(f, i, c, row):
    row[0], row[1], row[2], row[3] = c, i[c, _I_START], i[c, _I_LAST_ABOVE] + 1, i[c, _I_PEAK_AT]
    row[4], row[5], row[6] = i[c, _I_DETECTED], i[c, _I_CAUSE], f[c, _F_PEAK]


@njit(cache=True)
def _advance(X, F, external, k, theta, P, lags, f, i, t, score, out):
    """Advance every channel over the samples X [T, C]; write score [T, C] and the closed events
    into out (rows of _NE); return how many closed."""
    p, forget, alpha, warmup, enter, exit_, merge = int(k[0]), k[1], k[2], k[3], k[4], k[5], k[6]
    clip, cusum_k, cusum_h, stuck, level, level_alpha, floor = k[7], k[8], k[9], k[10], k[11], k[12], k[13]
    T, C = X.shape
    Pphi = np.empty(p)
    gain = np.empty(p)
    ne = 0
    for s in range(T):
        now = t[0]
        for c in range(C):
            x = X[s, c]
            if not np.isfinite(x):               # not fed: the state is held
                i[c, _I_MISSING] += 1
                score[s, c] = np.nan
                continue
            pred = F[s, c] if external else f[c, _F_FORECAST]
            r = x - pred if np.isfinite(pred) else 0.0      # no forecast yet: no news
            n = i[c, _I_FED] + 1
            i[c, _I_FED] = n
            warm = n <= warmup

            # residual test; the scale is the mean |r| over the warm-up, then an EWMA of clipped |r|
            sigma = max(GAUSS_MAD * f[c, _F_MABS], floor * f[c, _F_DSCALE]) if n > 2 else np.inf
            z = r / max(sigma, 1e-300)
            if n > 1:
                a = 1.0 / (n - 1) if warm else alpha
                f[c, _F_MABS] += a * ((abs(r) if warm else min(abs(r), clip * sigma)) - f[c, _F_MABS])
            best, cause, since = abs(z), 0, now

            # drift test: two-sided CUSUM, restarted after each alarm
            if cusum_h > 0:
                zc = min(max(z, -clip), clip)
                for side, col, frm in ((1.0, _F_SPOS, _I_FROM_POS), (-1.0, _F_SNEG, _I_FROM_NEG)):
                    S = f[c, col]
                    if S == 0.0:
                        i[c, frm] = now               # an excursion starts where S leaves 0
                    S = 0.0 if warm else max(0.0, S + side * zc - cusum_k)
                    if enter * S / cusum_h > best:
                        best, cause, since = enter * S / cusum_h, 1, i[c, frm]
                    f[c, col] = 0.0 if S >= cusum_h else S
            # stuck test: a run of exactly repeated values
            if stuck > 0:
                run = i[c, _I_RUN] + 1 if x == f[c, _F_LAST] else 0
                i[c, _I_RUN] = run
                if enter * run / stuck > best:
                    best, cause, since = enter * run / stuck, 2, now - run
            # level test: far from the slow running mean of the signal
            if level > 0:
                mu, var = f[c, _F_MEAN], f[c, _F_VAR]
                sd = math.sqrt(var)
                if n > 2 and enter * abs(x - mu) / (level * max(sd, 1e-300)) > best:
                    best, cause, since = enter * abs(x - mu) / (level * max(sd, 1e-300)), 3, now
                a = 1.0 / n if warm else level_alpha
                dev = x - mu if warm or n == 1 else min(max(x - mu, -clip * sd), clip * sd)
                f[c, _F_MEAN] = mu + a * dev if n > 1 else x
                f[c, _F_VAR] = (1.0 - a) * (var + a * dev * dev) if n > 1 else 0.0
            if warm:
                best = min(best, np.nextafter(enter, 0.0))   # no event before the scale is known
            score[s, c] = best

            # hysteresis: open at enter, close after more than `merge` samples below exit
            if i[c, _I_OPEN]:
                if best >= exit_:
                    i[c, _I_QUIET] = 0
                    i[c, _I_LAST_ABOVE] = now
                    if best > f[c, _F_PEAK]:
                        f[c, _F_PEAK] = best
                        i[c, _I_PEAK_AT] = now
                else:
                    i[c, _I_QUIET] += 1
                    if i[c, _I_QUIET] > merge:
                        _event_row(f, i, c, out[ne])
                        ne += 1
                        i[c, _I_OPEN] = 0
            elif best >= enter:
                i[c, _I_OPEN], i[c, _I_START], i[c, _I_DETECTED], i[c, _I_LAST_ABOVE] = 1, since, now, now
                i[c, _I_PEAK_AT], i[c, _I_CAUSE], i[c, _I_QUIET] = now, cause, 0
                f[c, _F_PEAK] = best

            # the built-in forecaster: one RLS step of the AR on differences, then x̂ of the next sample
            dx = x - f[c, _F_LAST] if n > 1 else 0.0
            d = f[c, _F_DSCALE]
            d += (min(abs(dx), 5.0 * d if d > 0 else np.inf) - d) / min(max(n - 1, 1), DSCALE_MEMORY)
            f[c, _F_DSCALE] = d
            u = max(d, 1e-12)
            denom, pred_n = forget, 0.0
            for a_ in range(p):
                acc = 0.0
                for b in range(p):
                    acc += P[c, a_, b] * lags[c, b]
                Pphi[a_] = acc
                denom += lags[c, a_] * acc
                pred_n += theta[c, a_] * lags[c, a_]
            lim = clip * sigma / u
            err = min(max(dx / u - pred_n, -lim), lim)
            for a_ in range(p):
                gain[a_] = Pphi[a_] / denom
                theta[c, a_] += gain[a_] * err
            # P ← (P - g φᵀP) / λ, kept symmetric (rounding otherwise drifts it indefinite and θ explodes)
            trace, least = 0.0, np.inf
            for a_ in range(p):
                for b in range(a_, p):
                    v = (0.5 * (P[c, a_, b] + P[c, b, a_]) - gain[a_] * Pphi[b]) / forget
                    P[c, a_, b] = v
                    P[c, b, a_] = v
                trace += P[c, a_, a_]
                least = min(least, P[c, a_, a_])
            if least <= 0.0:                     # lost definiteness all the same: start P afresh, keep θ
                P[c] = 0.0
                for a_ in range(p):
                    P[c, a_, a_] = P0
            elif trace > P_TRACE_MAX:
                P[c] *= P_TRACE_MAX / trace
            for a_ in range(p - 1, 0, -1):
                lags[c, a_] = lags[c, a_ - 1]
            lags[c, 0] = dx / u
            nxt = 0.0
            for a_ in range(p):
                nxt += theta[c, a_] * lags[c, a_]
            f[c, _F_LAST] = x
            f[c, _F_FORECAST] = x + u * nxt
        t[0] = now + 1
    return ne
