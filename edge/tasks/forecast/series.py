"""Forecasting any recorded series (numpy only): read, split, normalise, and the baselines a
forecaster must beat, scored on the same origins as the model (`edge train forecast`).

Rules, stated once:

* **Reading** is `edge.io.recordings.read_recording` (CSV, NPZ or JSON lines; a ``t`` column in
  seconds or a ``date``/``timestamp`` column of ISO date-times), so training reads exactly what
  ``edge replay`` reads. Rows are taken as they come: the model steps once per row, and the rate in
  the bundle is the file's median row rate.
* **Missing values**: a NaN inside a channel is filled by linear interpolation between its
  neighbours (counted, per channel); leading and trailing rows with a NaN are dropped (counted).
* **Split** chronological by rows, ``train/val/test`` fractions (default 0.7/0.1/0.2); mean and
  (population) std per channel from the train rows only; everything is scored in that normalised
  space, as the ETT protocol does.
* **Origins**: a forecast made after row t covers rows t+1..t+H; a split scores every origin whose
  H targets lie in it and whose input window of W rows lies in the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.io.recordings import RecordingError, read_recording
from edge.tasks.forecast.baselines import fit_least_squares, gram, repeat_last
from edge.tasks.forecast.ett import future, scores

SPLITS = ("train", "val", "test")


@dataclass
class Series:
    path: str
    channels: list
    values: np.ndarray          # [N, C] raw, NaN filled
    rate_hz: float
    borders: dict               # split -> (start, end) rows
    mean: np.ndarray
    std: np.ndarray
    notes: dict = field(default_factory=dict)

    @property
    def z(self) -> np.ndarray:
        return (self.values - self.mean) / self.std

    def origins(self, split: str, horizon: int, window: int) -> np.ndarray:
        start, end = self.borders[split]
        return np.arange(max(start - 1, window - 1), end - horizon)


def parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise ValueError(f"--split {text!r}: three positive fractions that add up to 1, e.g. 0.7,0.1,0.2")
    return parts


def fill_missing(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Interior NaNs interpolated per channel, leading/trailing NaN rows dropped (module rules)."""
    ok = np.all(np.isfinite(x), axis=1)
    if not ok.any():
        raise ValueError("no row with every target channel finite")
    first, last = int(np.argmax(ok)), len(ok) - int(np.argmax(ok[::-1]))
    x = x[first:last].copy()
    filled = {}
    rows = np.arange(len(x))
    for c in range(x.shape[1]):
        bad = ~np.isfinite(x[:, c])
        if bad.any():
            x[bad, c] = np.interp(rows[bad], rows[~bad], x[~bad, c])
            filled[c] = int(bad.sum())
    return x, {"dropped_edge_rows": int(first + len(ok) - last), "interpolated": filled}


def load_series(path, targets, split=(0.7, 0.1, 0.2), min_rows: int = 0) -> Series:
    rec = read_recording(path, channels=targets, check_units=False)
    names = [c.lower() for c in rec.channels]
    missing = [c for c in targets if c.lower() not in names]
    if missing:
        raise RecordingError(f"no column {', '.join(missing)} (it has {', '.join(rec.channels)})", path)
    cols = [names.index(c.lower()) for c in targets]
    values, notes = fill_missing(rec.x[:, cols].astype(np.float64))
    notes["interpolated"] = {targets[c]: n for c, n in notes["interpolated"].items()}
    n = len(values)
    cuts = np.round(np.cumsum(split) * n).astype(int)
    borders = {"train": (0, int(cuts[0])), "val": (int(cuts[0]), int(cuts[1])), "test": (int(cuts[1]), n)}
    if min(e - s for s, e in borders.values()) < max(min_rows, 2):
        raise RecordingError(f"{n} rows: a split of {split} leaves a part shorter than {max(min_rows, 2)} rows "
                             f"(the window plus the horizon)", path)
    train = values[slice(*borders["train"])]
    std = train.std(0)
    std[std == 0] = 1.0                     # a constant channel: scored in its own units
    return Series(str(path), list(targets), values, float(rec.rate_hz), borders, train.mean(0), std, notes)


def detect_period(z: np.ndarray, max_lag: int) -> int:
    """The lag (2..max_lag) of the highest local peak of the channels' mean autocorrelation; 1 when
    there is none (then seasonal naive is last value)."""
    z = z - z.mean(0)
    n = len(z)
    max_lag = min(max_lag, n // 2)
    if max_lag < 3:
        return 1
    spec = np.fft.rfft(z, n=2 * n, axis=0)
    acf = np.fft.irfft(spec * np.conj(spec), axis=0)[:max_lag + 1].mean(1)
    acf = acf / max(acf[0], 1e-300)
    peaks = [k for k in range(2, max_lag) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1] and acf[k] > 0.2]
    return max(peaks, key=lambda k: acf[k]) if peaks else 1


def seasonal_naive(z, origins, horizon, period) -> np.ndarray:
    """ŷ(t+h) = z(t+h − P·ceil(h/P)): the last full period repeated; [n, H, C]."""
    h = np.arange(1, horizon + 1)
    back = h - period * np.ceil(h / period).astype(int)
    return z[origins[:, None] + back[None, :]]


def least_squares_shared(z, train_origins, window, horizon, ridge):
    return fit_least_squares(gram(z, train_origins, window, horizon), ridge)


def least_squares_per_channel(z, train_origins, window, horizon, ridge):
    return [fit_least_squares(gram(z[:, c:c + 1], train_origins, window, horizon), ridge) for c in range(z.shape[1])]


def baseline_forecasts(s: Series, split: str, horizon: int, window: int, period: int, ridge: float = 1e-3) -> dict:
    """name -> forecasts [n, H, C] on `split`'s origins, every baseline fitted on train only."""
    z = s.z
    train, o = s.origins("train", horizon, window), s.origins(split, horizon, window)
    shared = least_squares_shared(z, train, window, horizon, ridge)
    per = least_squares_per_channel(z, train, window, horizon, ridge)
    return {"last value": repeat_last(z, o, horizon),
            f"seasonal naive (period {period} rows)": seasonal_naive(z, o, horizon, period),
            "least squares, one fit per channel": np.concatenate(
                [m.predict(z[:, c:c + 1], o, horizon) for c, m in enumerate(per)], axis=2),
            "least squares, one fit shared by all channels": shared.predict(z, o, horizon)}


def score_by_horizon(forecast, truth, horizons) -> dict:
    """{H: {mse, mae}} over steps 1..H of every origin."""
    return {int(h): {k: round(v, 5) for k, v in scores(forecast[:, :h], truth[:, :h]).items()} for h in horizons}


def truth(s: Series, split: str, horizon: int, window: int) -> np.ndarray:
    return future(s.z, s.origins(split, horizon, window), horizon)
