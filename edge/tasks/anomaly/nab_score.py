"""The Numenta Anomaly Benchmark's scoring rules (Lavin & Ahmad 2015; Ahmad et al. 2017), written
from the rules, numpy only. `tests/test_nab.py` proves it on Numenta HTM's published scores (70.1).

Per file of N rows with anomaly windows [left, right] (timestamps, inclusive):

* the first ``min(floor(0.15 N), 750)`` rows are the probationary period: never scored;
* a row is a detection when its anomaly score is >= the threshold (one number for the corpus);
* a window is scored once, by the best-placed detection inside it — detection at row i of a
  window of width w rows whose right edge is row r scores ``tp · σ(−(r − i + 1)/w) / σ(−1)`` with the
  scaled sigmoid ``σ(y) = 2/(1 + e^{5y}) − 1`` (so the earliest detection counts, ≈ 1 at the left
  edge, ≈ 0 at the right); a window without one costs ``−fn``;
* a detection outside every window costs ``fp · σ((i − r')/(w' − 1))`` (negative), r' and w' the
  right edge and width of the window before it: cheap just after a window, the full ``−fp`` three
  widths after it, and the full ``−fp`` where no window came before;
* the corpus's raw score is the sum over files; normalised ``100 (raw − null) / (perfect − null)``,
  null detecting nothing (``−fn`` per window) and perfect every window at its left edge (``+tp``).

Each profile (``standard``, ``reward_low_FP_rate``, ``reward_low_FN_rate``) weighs tp, fp and fn
differently and has its own threshold; `best_threshold` finds the one that maximises the corpus score
exactly (every distinct score is a candidate), where NAB's own optimiser searches locally.
"""
from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROBATION_FRACTION = 0.15
PROBATION_MAX = 750             # 0.15 · 5000 rows: long files are on probation for 750 rows only


class NABError(ValueError):
    """A corpus, label or results file that cannot be scored; the message names the file."""


def scaled_sigmoid(y):
    """2/(1 + e^{5y}) − 1, and exactly −1 from y = 3 on (a detection far past a window)."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y >= 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * y, 700.0))) - 1.0)


def probation_rows(n: int) -> int:
    return int(min(math.floor(PROBATION_FRACTION * n), PROBATION_MAX))


def parse_times(values, where: str) -> np.ndarray:
    try:
        return np.array(list(values), dtype="datetime64[us]")
    except ValueError as e:
        raise NABError(f"{where}: a timestamp that is not a date: {e}") from None


@dataclass
class ScoredFile:
    """One file's rows as the scorer sees them: for every scorable row (after probation) its anomaly
    score, the window it lies in (−1 outside) and the value a detection there is worth per unit weight
    (tp part inside a window, fp part outside)."""
    name: str
    scores: np.ndarray        # [n] anomaly scores of the scorable rows
    window: np.ndarray        # [n] window index, or -1
    tp_value: np.ndarray      # [n] σ(pos)/σ(-1) inside windows (0 outside)
    fp_value: np.ndarray      # [n] σ(pos past the last window) outside windows, <= 0 (0 inside)
    windows: int              # windows with at least one scorable row


def score_rows(name: str, times: np.ndarray, scores, windows) -> ScoredFile:
    """Lay the rules of the module docstring over one file: times [N] (datetime64), scores [N],
    windows a list of (left, right) timestamps that must be rows of the file."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(times)
    if len(scores) != n:
        raise NABError(f"{name}: {len(scores)} anomaly scores for {n} rows")
    window = np.full(n, -1)
    tp_value, fp_value = np.zeros(n), np.zeros(n)
    prev_right, prev_width, position = None, None, 0
    rows = np.arange(n)
    for k, (left, right) in enumerate(windows):
        lo, hi = _row_of(times, left, name), _row_of(times, right, name)
        if hi < lo or lo < position:
            raise NABError(f"{name}: window {k} ({left} .. {right}) is empty or overlaps the one before")
        _outside(fp_value, rows, position, lo, prev_right, prev_width)
        width = hi - lo + 1
        window[lo:hi + 1] = k
        tp_value[lo:hi + 1] = scaled_sigmoid(-(hi - rows[lo:hi + 1] + 1) / width) / scaled_sigmoid(-1.0)
        prev_right, prev_width, position = hi, width, hi + 1
    _outside(fp_value, rows, position, n, prev_right, prev_width)
    keep = slice(probation_rows(n), n)
    w = window[keep]
    return ScoredFile(name, scores[keep], w, tp_value[keep], fp_value[keep], len(np.unique(w[w >= 0])))


def _row_of(times, stamp, name) -> int:
    t = parse_times([stamp], name)[0]
    i = int(np.searchsorted(times, t))
    if i >= len(times) or times[i] != t:
        raise NABError(f"{name}: window edge {stamp} is not a timestamp of the file")
    return i


def _outside(fp_value, rows, start, end, prev_right, prev_width) -> None:
    """False-positive values of rows start..end-1, after the window ending at prev_right (if any)."""
    if prev_right is None:
        fp_value[start:end] = -1.0
    else:
        fp_value[start:end] = scaled_sigmoid((rows[start:end] - prev_right) / max(prev_width - 1.0, 1.0))


def raw_score(f: ScoredFile, threshold: float, weights: dict) -> dict:
    """Raw score of one file at one threshold, with its counts (detected windows, false positives)."""
    hit = f.scores >= threshold
    inside = hit & (f.window >= 0)
    best = np.full(f.windows, -np.inf)
    ids = np.unique(f.window[f.window >= 0])
    np.maximum.at(best, np.searchsorted(ids, f.window[inside]), f.tp_value[inside])
    detected = np.isfinite(best)
    fp = hit & (f.window < 0)
    score = (weights["tpWeight"] * best[detected].sum() - weights["fnWeight"] * (~detected).sum()
             + weights["fpWeight"] * f.fp_value[fp].sum())
    return {"raw": float(score), "windows": f.windows, "detected": int(detected.sum()), "fp": int(fp.sum())}


def corpus_score(files, threshold: float, weights: dict) -> dict:
    """Summed raw score of the corpus at one threshold, normalised (100 perfect, 0 null)."""
    parts = [raw_score(f, threshold, weights) for f in files]
    windows = sum(p["windows"] for p in parts)
    raw = sum(p["raw"] for p in parts)
    null, perfect = -weights["fnWeight"] * windows, weights["tpWeight"] * windows
    return {"score": 100.0 * (raw - null) / (perfect - null), "raw": raw, "threshold": float(threshold),
            "windows": windows, "detected": sum(p["detected"] for p in parts), "fp": sum(p["fp"] for p in parts)}


def best_threshold(files, weights: dict) -> float:
    """The threshold with the highest corpus score: the total is a step function of the threshold
    that changes only at the scores themselves, so every change is collected as (score, Δ) and the
    best prefix sum wins (ties: the highest threshold)."""
    at, delta = [np.array([np.inf])], [np.zeros(1)]
    for f in files:
        fp = f.window < 0
        at.append(f.scores[fp])
        delta.append(weights["fpWeight"] * f.fp_value[fp])
        for k in np.unique(f.window[~fp]):
            rows = np.flatnonzero(f.window == k)
            order = rows[np.argsort(-f.scores[rows], kind="stable")]
            running = np.maximum.accumulate(weights["tpWeight"] * f.tp_value[order])
            steps = np.diff(np.concatenate([[-weights["fnWeight"]], running]))
            at.append(f.scores[order])
            delta.append(steps)
    at, delta = np.concatenate(at), np.concatenate(delta)
    order = np.argsort(-at, kind="stable")
    at, total = at[order], np.cumsum(delta[order])
    last = np.r_[at[1:] != at[:-1], True]          # a threshold takes every row with a score >= it
    candidates = np.flatnonzero(last)
    best = candidates[np.argmax(total[candidates])]
    return float(at[best]) if np.isfinite(at[best]) else math.inf


# -------------------------------------------------------------------------------------- corpus files

def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of a NAB data file (``timestamp,value``)."""
    return _read_timed(path, "value")


def read_results(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times, anomaly scores) of a results file (``timestamp,…,anomaly_score``; .gz read as gzip)."""
    return _read_timed(path, "anomaly_score")


def _read_timed(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    times, values = _read_columns(path, ("timestamp", column))
    try:
        return parse_times(times, str(path)), np.array(values, dtype=np.float64)
    except ValueError as e:
        raise NABError(f"{path}: a {column} that is not a number: {e}") from None


def _read_columns(path: Path, names) -> list[list[str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            missing = [c for c in names if c not in header]
            if missing:
                raise NABError(f"{path}: no column {', '.join(missing)} in the header {header}")
            cols = [header.index(c) for c in names]
            rows = [[row[c] for c in cols] for row in reader if row]
    except OSError as e:
        raise NABError(f"{path}: cannot read: {e}") from None
    return [list(col) for col in zip(*rows)] if rows else [[] for _ in names]


@dataclass
class Corpus:
    """The NAB folder: ``data/<category>/<file>.csv``, ``labels/combined_windows.json`` and
    ``config/profiles.json``."""
    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        for part in ("data", "labels/combined_windows.json", "config/profiles.json"):
            if not (self.root / part).exists():
                raise FileNotFoundError(f"{self.root}: not a NAB folder (no {part}); pass --data DIR")
        self.windows = json.loads((self.root / "labels/combined_windows.json").read_text())
        self.profiles = {k: v["CostMatrix"] for k, v in json.loads((self.root / "config/profiles.json").read_text()).items()}

    @property
    def files(self) -> list[str]:
        """The labelled files, ``<category>/<file>.csv``, in a fixed order."""
        return sorted(self.windows)

    def series(self, name: str):
        return read_series(self.root / "data" / name)

    def scored(self, name: str, times, scores) -> ScoredFile:
        return score_rows(name, times, scores, self.windows[name])


def score_corpus(corpus: Corpus, results: dict, thresholds: dict | None = None) -> dict:
    """Per profile: the score at the given threshold, or at the best one. ``results`` maps each
    corpus file to (times, anomaly scores); every labelled file must be there."""
    missing = [n for n in corpus.files if n not in results]
    if missing:
        raise NABError(f"no results for {len(missing)} corpus file(s), e.g. {missing[0]}")
    files = []
    for name in corpus.files:
        times, scores = results[name]
        data_times = corpus.series(name)[0]
        if len(times) != len(data_times) or np.any(times != data_times):
            raise NABError(f"{name}: the results' timestamps are not the data file's rows")
        files.append(corpus.scored(name, times, scores))
    out = {}
    for profile in PROFILES:
        weights = corpus.profiles[profile]
        t = (thresholds or {}).get(profile)
        out[profile] = corpus_score(files, best_threshold(files, weights) if t is None else t, weights)
    return out
