"""How long the attitude estimate needs to get back under 3° after a state reset in motion
(docs/bad-values.md), on the BROAD test trials:

    python bench/attitude_reset_recovery.py [--broad ../shared/data/broad] [--resets 8]

For each test trial, `--resets` moments in scored motion (|gyr| > 0.5 rad/s, spread evenly, at
least 2 s from the start and 10 s from the end) get a 1 s gap in ``t`` right before them: `edge replay`
resets the state there. Recovery time = from the reset until the inclination error stays ≤ 3° for
1 s (occluded reference rows count as fine), within the 10 s after it. "before": the reset as the
runtime did it before issue 18 (the initial state, the filter levelled from one accelerometer
sample), computed here with the engine alone; "after": `edge replay` itself (the attitude task's
settling, edge.tasks.attitude.settle)."""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from edge.io.datasets import broad_trials
from edge.io.recordings import read_recording
from edge.replay import replay
from edge.runtime import load
from edge.tasks.attitude.metric import inclination_error_deg
from edge.tasks.attitude.view import quaternions

THRESHOLD_DEG, HOLD_S, WINDOW_S = 3.0, 1.0, 10.0


def recovery_s(err, rate_hz) -> float:
    hold = int(HOLD_S * rate_hz)
    ok = np.where(np.isnan(err), True, err <= THRESHOLD_DEG).astype(int)
    runs = np.convolve(ok, np.ones(hold, int), "valid")
    first = np.flatnonzero(runs == hold)
    return float(first[0] / rate_hz) if len(first) else float("inf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broad", default=None, help="the BROAD folder (default: ../shared/data/broad)")
    p.add_argument("--resets", type=int, default=8, help="resets per trial")
    args = p.parse_args()
    model = load("imu-attitude")
    names = [c["name"] for c in model.meta["inputs"]]
    before, after = [], []
    for path in broad_trials(args.broad, split="test"):
        rec = read_recording(path)
        rate, n, window = rec.rate_hz, len(rec), int(WINDOW_S * rec.rate_hz)
        moving = np.flatnonzero(rec.scored & (np.linalg.norm(rec.gyr, axis=1) > 0.5))
        moving = moving[(moving > 2 * rate) & (moving < n - window)]
        for k in moving[np.linspace(0, len(moving) - 1, args.resets).astype(int)]:
            ref = rec.reference[k:k + window]
            y = model.block(rec.columns(names)[k:k + window, None], model.init_state(1))[:, 0]
            before.append(recovery_s(inclination_error_deg(y.astype(np.float64), ref), rate))
            t = rec.t.copy()
            t[k:] += 1.0                                         # a 1 s gap: the replay resets at sample k
            res = replay(dataclasses.replace(rec, t=t, gaps=[]), model)
            assert res.resets == 1
            after.append(recovery_s(inclination_error_deg(quaternions(res)[k:k + window], ref), rate))
    out = {}
    for label, v in (("before", before), ("after", after)):
        v = np.array(v)
        out[label] = {"median_s": round(float(np.median(v)), 2), "worst_s": float(np.max(v)) if np.isfinite(v).all()
                      else None, "not_within_10s": int((~np.isfinite(v)).sum()),
                      "under_1s": round(float(np.mean(v < 1.0)), 3), "resets": len(v)}
        print(f"{label:7s} median {np.median(v):.2f} s, worst "
              + (f"{np.max(v):.2f} s" if np.isfinite(v).all() else f"> {WINDOW_S:g} s ({int((~np.isfinite(v)).sum())} "
                 f"not back within {WINDOW_S:g} s; worst of the rest {np.max(v[np.isfinite(v)]):.2f} s)")
              + f", under 1 s: {np.mean(v < 1.0):.0%} of {len(v)} resets")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
