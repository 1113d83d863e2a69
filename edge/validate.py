"""Which input samples a bundle may be fed, and the state guard (docs/bad-values.md).

**Input contract.** Each input channel of a bundle has a valid range: ``inputs[i].range = [lo, hi]``
in the channel's unit when the metadata declares one (the sensor's full scale), else a default by
unit — wide, but finite: |acc| ≤ 1.5 × 16 g, |gyr| ≤ 40 rad/s (beyond the ±2000 °/s ≈ 35 rad/s of
common gyroscopes), and for channels with a normalisation ``mean ± 1000·std`` (no sensor reads a
thousand standard deviations off). A sample with a value outside its range is treated like a
non-finite one: it is not fed and the state is held across it, counted as ``out_of_range``
(non-finite ones as ``not_finite``). `edge.runtime.Model`, ``edge replay`` and the daemon apply
the same rule through `InputContract`.

**State guard.** One reduction per engine call tells whether any state went non-finite (NaN/Inf);
only then is the stream found, reset to the initial state and reported (`StateReset`) so that a
non-finite state is never carried on or checkpointed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STANDARD_GRAVITY = 9.80665            # m/s² per g: the project's one gravity constant (edge.io.recordings uses it)
ACC_MAX_G = 16.0 * 1.5                 # the widest common accelerometer scale (±16 g), with margin
GYR_MAX_RAD_S = 40.0                   # ±2000 °/s ≈ 34.9 rad/s, with margin
NORMALISED_MAX = 1000.0                # standard deviations off the training mean

_ACC = {"m/s^2": ACC_MAX_G * STANDARD_GRAVITY, "m/s2": ACC_MAX_G * STANDARD_GRAVITY,
        "m/s²": ACC_MAX_G * STANDARD_GRAVITY, "g": ACC_MAX_G}
_GYR = {"rad/s": GYR_MAX_RAD_S, "deg/s": math.degrees(GYR_MAX_RAD_S), "dps": math.degrees(GYR_MAX_RAD_S),
        "°/s": math.degrees(GYR_MAX_RAD_S)}
DEFAULT_MAX_ABS = {**_ACC, **_GYR}     # unit -> default |value| bound

REASONS = ("not_finite", "out_of_range")


def default_range(spec: dict, mean: float | None = None, std: float | None = None) -> tuple[float, float]:
    """The valid range of an input channel whose metadata declares none."""
    unit = str(spec.get("unit") or "").strip().lower()
    if unit in DEFAULT_MAX_ABS:
        bound = DEFAULT_MAX_ABS[unit]
        return -bound, bound
    if mean is not None and std is not None and math.isfinite(mean) and math.isfinite(std) and std > 0:
        return mean - NORMALISED_MAX * std, mean + NORMALISED_MAX * std
    return -math.inf, math.inf


def _number(v) -> str:
    """A plain number for messages (no numpy repr)."""
    return f"{float(v):.6g}"


@dataclass
class Rejected:
    """The samples an `InputContract` refused in one call: counts by reason and the first of each."""
    fed: np.ndarray                    # [..] bool, the samples to feed
    counts: dict                       # reason -> samples
    first: dict                        # reason -> one line naming the first such sample

    def __bool__(self) -> bool:
        return any(self.counts.values())


class InputContract:
    """The valid range of each input channel of a bundle (see the module doc)."""

    def __init__(self, meta: dict, overrides: dict | None = None):
        self.names = [str(c.get("name", "")) for c in meta["inputs"]]
        self.units = [str(c.get("unit") or "") for c in meta["inputs"]]
        norm = meta.get("normalisation") or {}
        mean, std = norm.get("mean"), norm.get("std")
        lo, hi = [], []
        for k, spec in enumerate(meta["inputs"]):
            r = spec.get("range")
            if r is None:
                r = default_range(spec, None if mean is None else float(mean[k]), None if std is None else float(std[k]))
            lo.append(float(r[0]))
            hi.append(float(r[1]))
        self.lo, self.hi = np.array(lo, np.float64), np.array(hi, np.float64)
        for name, bound in (overrides or {}).items():
            self.set_range(name, bound)

    def set_range(self, name: str, bound) -> None:
        """Set one channel's range: a number (±bound) or a (lo, hi) pair, in the channel's unit."""
        lower = [n.lower() for n in self.names]
        if name.lower() not in lower:
            raise ValueError(f"no input channel {name!r} (the bundle reads {', '.join(self.names)})")
        lo, hi = (-abs(float(bound)), abs(float(bound))) if np.ndim(bound) == 0 else map(float, bound)
        if not lo < hi:
            raise ValueError(f"range of {name}: {_number(lo)} .. {_number(hi)} is empty")
        k = lower.index(name.lower())
        self.lo[k], self.hi[k] = lo, hi

    def describe(self, k: int) -> str:
        unit = f" {self.units[k]}" if self.units[k] else ""
        if self.lo[k] == -self.hi[k]:
            return f"±{_number(self.hi[k])}{unit}"
        return f"[{_number(self.lo[k])}, {_number(self.hi[k])}]{unit}"

    def screen(self, x, where=None) -> Rejected:
        """The samples of ``x [..., C]`` (bundle units, before normalisation) that may be fed.

        ``where(index) -> str`` names a sample (index: the position in ``x`` without the channel
        axis) in the messages; by default its position."""
        x = np.asarray(x)
        finite = np.isfinite(x)
        with np.errstate(invalid="ignore"):
            inside = (x >= self.lo) & (x <= self.hi)
        bad_finite = ~finite.all(axis=-1)
        bad_range = ~inside.all(axis=-1) & ~bad_finite
        counts = {"not_finite": int(bad_finite.sum()), "out_of_range": int(bad_range.sum())}
        first = {}
        name = where or (lambda idx: "sample " + ", ".join(str(int(i)) for i in idx))
        if counts["not_finite"]:
            idx = tuple(np.argwhere(bad_finite)[0])
            k = int(np.flatnonzero(~finite[idx])[0])
            first["not_finite"] = f"{name(idx)}: {self.names[k]} is {_number(x[idx][k])}"
        if counts["out_of_range"]:
            idx = tuple(np.argwhere(bad_range)[0])
            k = int(np.flatnonzero(~inside[idx])[0])
            first["out_of_range"] = (f"{name(idx)}: {self.names[k]} = {_number(x[idx][k])} is outside its valid "
                                     f"range {self.describe(k)}")
        return Rejected(fed=~(bad_finite | bad_range), counts=counts, first=first)

    def all_fed(self, x) -> bool:
        """True when every value of ``x`` is finite and inside its range (two reductions: the fast path)."""
        x = np.asarray(x)
        if not np.isfinite(x.sum(dtype=np.float64)):
            return False
        return bool((x.min(axis=tuple(range(x.ndim - 1))) >= self.lo).all()
                    and (x.max(axis=tuple(range(x.ndim - 1))) <= self.hi).all())


# ------------------------------------------------------------------------------ the state guard

@dataclass
class StateReset:
    """A stream whose state went non-finite in an engine call and was reset to the initial state."""
    stream: int                        # index in the call's batch
    sample: int                        # first sample of the call whose output was non-finite (or the last)

    def describe(self, stream_name=None, sample_name=None) -> str:
        s = self.stream if stream_name is None else stream_name
        k = self.sample if sample_name is None else sample_name
        return f"stream {s}: state turned non-finite at sample {k}; reset to the initial state (state_reset_nonfinite)"


def state_is_finite(state: np.ndarray) -> bool:
    """One reduction: the float64 sum of float32 values is NaN/Inf only if a value is."""
    return bool(np.isfinite(state.sum(dtype=np.float64)))


def nonfinite_rows(state: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.isfinite(state).all(axis=-1))


# ------------------------------------------------------------------------------ gyroscope unit sanity

GYR_RATIO_WINDOW_S = 0.05            # the acc direction is compared between two such means
GYR_RATIO_MIN_WINDOWS = 50           # fewer turns than this: no verdict
GYR_RATIO_HIGH, GYR_RATIO_LOW = 20.0, 0.25   # beyond: the gyro's unit is off by 57.3× (see gyro_rate_ratio)


def gyro_rate_ratio(acc, gyr, rate_hz: float, valid=None):
    """How much faster the accelerometer's direction turns than the gyroscope says, during motion:
    (median ratio, windows) or (None, windows) when too few windows qualify.

    With gravity dominating the accelerometer, its direction u turns by the gyro's rotation
    (du/dt = -ω × u). Over pairs of adjacent means of ``GYR_RATIO_WINDOW_S`` with |acc| within 15 %
    of g and an acc-implied turn rate above 0.5 rad/s, the ratio of the acc turn angle to
    |∫ω dt × u| is 1 for a right unit; linear accelerations bias it up. On the 30 BROAD trials it
    lies between 1.2 and 6.6; with rad/s read as deg/s between 68 and 380; deg/s read as rad/s puts
    it at 1/57 of the right value (≤ 0.12). `GYR_RATIO_HIGH` and `GYR_RATIO_LOW` sit between."""
    acc = np.asarray(acc, np.float64)
    gyr = np.asarray(gyr, np.float64)
    n = len(acc)
    L = max(1, int(round(GYR_RATIO_WINDOW_S * rate_hz)))
    if n < 4 * L:
        return None, 0
    if valid is None:
        valid = np.isfinite(acc).all(axis=1) & np.isfinite(gyr).all(axis=1)
    a = np.where(valid[:, None], acc, 0.0)
    w = np.where(valid[:, None], gyr, 0.0)
    ca = np.cumsum(np.r_[np.zeros((1, 3)), a], axis=0)
    cw = np.cumsum(np.r_[np.zeros((1, 3)), w], axis=0)
    cbad = np.cumsum(np.r_[0, (~valid).astype(np.int64)])
    mean = (ca[L:] - ca[:-L]) / L                           # acc mean over [k, k + L)
    k = np.arange(0, n - 2 * L, max(1, L // 2))
    a0, a1 = mean[k], mean[k + L]
    n0, n1 = np.linalg.norm(a0, axis=1), np.linalg.norm(a1, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u0, u1 = a0 / n0[:, None], a1 / n1[:, None]
        theta = np.arccos(np.clip((u0 * u1).sum(axis=1), -1.0, 1.0))
        turn = (cw[k + L + L // 2] - cw[k + L // 2]) / rate_hz      # the gyro's rotation between the two centres
        um = u0 + u1
        um /= np.linalg.norm(um, axis=1)[:, None]
        phi = np.linalg.norm(np.cross(turn, um), axis=1)
        ok = ((cbad[k + 2 * L] == cbad[k]) & (np.abs(n0 / STANDARD_GRAVITY - 1) < 0.15)
              & (np.abs(n1 / STANDARD_GRAVITY - 1) < 0.15) & (theta * rate_hz / L > 0.5) & (phi > 0))
    windows = int(ok.sum())
    if windows < GYR_RATIO_MIN_WINDOWS:
        return None, windows
    return float(np.median(theta[ok] / phi[ok])), windows
