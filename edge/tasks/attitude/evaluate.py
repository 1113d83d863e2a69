"""Score attitude estimators on BROAD trials: inclination RMSE per trial, mean, worst, µs per sample.

    from edge.tasks.attitude import peers
    from edge.tasks.attitude.evaluate import broad_trials, evaluate_attitude, format_table
    results = evaluate_attitude(peers.estimators(), broad_trials("../shared/data/broad", "test"))
    print(format_table(results))

An estimator is any callable ``estimate(acc[N,3] m/s², gyr[N,3] rad/s, rate_hz) -> quat[N,4]``
(w,x,y,z, sensor-to-earth, z up), e.g. the adapters in :mod:`edge.tasks.attitude.peers`; our own model slots in
the same way. All estimators run in the same process on the same samples; each is timed with the
wall clock around its whole call on each trial (so the µs include any per-sample Python overhead).

The metric is BROAD's, from :func:`edge.tasks.attitude.metric.inclination_rmse` (``broad_utils.py``;
shared/data/README.md): e = q̂ ⊗ q⁻¹ in the earth frame, inclination = 2·acos(clip(√(e_w² + e_z²), 0, 1))
in degrees, RMSE over the samples where ``movement`` is True and the reference is not NaN (a NaN
estimate there gives NaN: a failure is not skipped); per-estimator mean and worst over trials.

``rate_hz`` resamples every trial first (rate-robustness check): acc and gyr by linear
interpolation, the reference by normalised lerp (NaN where a neighbour is NaN), ``movement`` by
nearest sample. No anti-alias filter: a plain resample, as a recording device at that rate without
one would give.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edge.io.atomic import atomic_write
from edge.tasks.attitude.metric import inclination_error_deg, inclination_rmse  # the one BROAD metric in edge
from edge.tasks.attitude.peers import PeerNotInstalled, timed
from edge.io.recordings import Recording, read_recording, resample
from edge.io.datasets import BROAD_TEST_TRIALS, broad_trials  # the split lives in one place

__all__ = ["BROAD_TEST_TRIALS", "broad_trials", "load_trial", "resample_trial", "evaluate_attitude",
           "format_table", "inclination_rmse", "inclination_error_deg"]

# ----------------------------------------------------------------------------------------------
# trials


def _as_trial(rec, name: str) -> dict:
    return {"name": name, "acc": rec.acc.astype(np.float64), "gyr": rec.gyr.astype(np.float64),
            "quat": rec.reference.astype(np.float64), "movement": rec.scored.astype(bool),
            "rate_hz": float(rec.rate_hz)}


def load_trial(path: str | os.PathLike) -> dict:
    """A BROAD trial as a dict: name, acc, gyr (float64), quat (float64, NaN rows), movement, rate_hz."""
    return _as_trial(read_recording(path), Path(path).stem)


def resample_trial(trial: dict, rate_hz: float) -> dict:
    """A loaded trial on a ``rate_hz`` grid, by `edge.io.recordings.resample` (what `edge replay` uses):
    acc/gyr linear, reference slerp, movement nearest."""
    if math.isclose(rate_hz, trial["rate_hz"]):
        return trial
    rec = Recording.from_imu(trial["acc"], trial["gyr"], rate_hz=trial["rate_hz"], reference=trial["quat"],
                             scored=trial["movement"])
    return _as_trial(resample(rec, rate_hz), trial["name"])


# ----------------------------------------------------------------------------------------------
# evaluation


def evaluate_attitude(estimators: Mapping[str, Callable], trials: Sequence, rate_hz: float | None = None,
                      progress: bool = True, warmup: bool = True) -> dict:
    """Run every estimator on every trial (paths or loaded dicts); score and time them.

    Returns a JSON-friendly dict::

        {"rate_hz": …, "trials": [names], "samples": {trial: N},
         "estimators": {name: {"rmse": {trial: deg}, "us_per_sample": {trial: µs},
                               "mean": deg, "worst": deg, "worst_trial": name,
                               "us": µs per sample over all trials, "error": None | message}}}

    An estimator that raises ImportError (a peer not installed) is reported with its message and
    skipped; any other exception propagates. ``warmup`` runs each estimator once on 1 s of the first
    trial first, so imports and model loading are not timed.
    """
    from tqdm import tqdm

    res = {name: {"rmse": {}, "us_per_sample": {}, "error": None, "_time": 0.0, "_n": 0}
           for name in estimators}
    names, samples, first, native_rate = [], {}, True, None
    bar = tqdm(trials, desc=f"trials{'' if rate_hz is None else f' @ {rate_hz:g} Hz'}", unit="trial",
               file=sys.stderr, disable=not progress)
    for item in bar:
        trial = load_trial(item) if not isinstance(item, dict) else item
        if rate_hz is not None:
            trial = resample_trial(trial, rate_hz)
        fs, n = trial["rate_hz"], len(trial["acc"])
        native_rate = native_rate or fs
        names.append(trial["name"])
        samples[trial["name"]] = n
        for name, estimate in estimators.items():
            r = res[name]
            if r["error"]:
                continue
            bar.set_postfix_str(f"{trial['name'][:2]} {name}")
            try:
                if first and warmup:
                    k = max(int(fs), 2)
                    estimate(trial["acc"][:k], trial["gyr"][:k], fs)
                q, us = timed(estimate, trial["acc"], trial["gyr"], fs)
            except ImportError as exc:  # PeerNotInstalled or any missing dependency
                r["error"] = str(exc) if isinstance(exc, PeerNotInstalled) else f"not installed: {exc}"
                continue
            q = np.asarray(q, dtype=np.float64)
            if q.shape != (n, 4):
                raise ValueError(f"{name} returned shape {q.shape} on {trial['name']}, expected {(n, 4)}")
            r["rmse"][trial["name"]] = inclination_rmse(q, trial["quat"], trial["movement"])
            r["us_per_sample"][trial["name"]] = us
            r["_time"] += us * n
            r["_n"] += n
        first = False

    for name, r in res.items():
        vals = r["rmse"]
        if vals:
            worst = max(vals, key=lambda k: (np.nan_to_num(vals[k], nan=np.inf)))
            r["mean"] = float(np.mean(list(vals.values())))
            r["worst"], r["worst_trial"] = float(vals[worst]), worst
            r["us"] = r["_time"] / r["_n"]
        else:
            r["mean"] = r["worst"] = r["us"] = float("nan")
            r["worst_trial"] = None
        del r["_time"], r["_n"]
    return {"rate_hz": rate_hz if rate_hz is not None else native_rate,
            "trials": names, "samples": samples, "estimators": res}


def format_table(results: dict, notes: Mapping[str, str] | None = None) -> str:
    """The results as a text table: estimator, mean °, worst ° (trial), µs/sample [, note]."""
    rows = [("estimator", "mean °", "worst ° (trial)", "µs/sample") + (("note",) if notes else ())]
    est = results["estimators"]
    order = sorted(est, key=lambda k: (est[k]["error"] is not None, np.nan_to_num(est[k]["mean"], nan=np.inf)))
    for name in order:
        r = est[name]
        note = ((notes or {}).get(name, ""),) if notes else ()
        if r["error"]:  # not installed: say so in the worst column
            rows.append((name, "—", r["error"], "—") + note)
            continue
        us = r["us"]
        rows.append((name, f"{r['mean']:.2f}", f"{r['worst']:.2f} ({r['worst_trial'][:2]})",
                     f"{us:.3g}" if us < 10 else f"{us:.0f}") + note)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 2, 3}

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    n = len(results["trials"])
    rate = results.get("rate_hz")
    head = f"{n} trial{'s' if n != 1 else ''}, {sum(results['samples'].values()):,} samples" + \
           (f", {rate:g} Hz" if rate else "")
    lines = [head, fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
    return "\n".join(lines)


def bundle_estimator(bundle: str = "imu-attitude", engine: str = "auto"):
    """An attitude bundle as an estimator `estimate(acc, gyr, rate_hz) -> quat[N, 4]`, run exactly as
    `edge replay` runs it (resampled to the bundle's rate when the recording's differs)."""
    from edge.io.recordings import Recording
    from edge.replay import replay
    from edge.runtime import load
    from edge.tasks.attitude.view import quaternions

    model = load(bundle, engine=engine)

    def estimate(acc, gyr, rate_hz):
        return quaternions(replay(Recording.from_imu(acc, gyr, rate_hz=rate_hz), model))

    return model, estimate


def add_arguments(p) -> None:
    from edge.tasks.attitude import peers
    p.add_argument("--model", default=None, help="imu-attitude: our bundle, a path or a shipped name (default imu-attitude)")
    p.add_argument("--engine", choices=["auto", "numba", "onnxruntime"], default="auto")
    p.add_argument("--data", default=None, help="BROAD folder (default: ../shared/data/broad)")
    p.add_argument("--split", choices=["test", "train", "all"], default="test",
                   help="which trials (default: test — report only, never tuned on)")
    p.add_argument("--rate", type=float, default=None, metavar="HZ",
                   help="resample every trial to HZ first (e.g. 100, 50); default: the native 285.714 Hz")
    p.add_argument("--peers", nargs="*", default=list(peers.PEERS), metavar="NAME",
                   help=f"peers beside ours (default: all: {' '.join(peers.PEERS)}; none: --peers)")
    p.add_argument("--json", metavar="PATH", help="also write the per-trial results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args) -> int:
    import json
    import platform
    import time

    from edge.tasks.attitude import peers
    from edge.io.datasets import broad_root

    unknown = [p for p in args.peers if p not in peers.PEERS]
    if unknown:
        raise SystemExit(f"edge eval: unknown peer(s) {', '.join(unknown)}; known: {', '.join(peers.PEERS)}")
    trials = broad_trials(broad_root(args.data), args.split)
    model, ours = bundle_estimator(args.model or args.task, args.engine)
    label = f"edge {model.meta.get('name') or args.model or args.task} ({model.engine})"
    estimators = {label: ours, **{name: peers.PEERS[name].estimate for name in args.peers}}
    notes = {label: "ours, causal", **{n: peers.PEERS[n].note for n in args.peers}}
    start = time.perf_counter()
    results = evaluate_attitude(estimators, trials, rate_hz=args.rate, progress=not args.no_progress)
    print(f"BROAD {args.split} split ({len(trials)} trials): " + format_table(results, notes))
    print("versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in peers.versions().items()))
    print(f"wall {time.perf_counter() - start:.0f} s on {platform.machine()}, Python {platform.python_version()}; "
          "µs per sample: wall clock around each whole call, Python overhead included")
    if args.json:
        atomic_write(args.json, json.dumps(results, indent=2, default=float))
    return 0
