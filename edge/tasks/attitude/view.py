"""How a replay of an attitude bundle is scored, written and drawn (the task registry's ``view``).

A bundle is an attitude bundle when its task is ``attitude`` or its outputs are named qw, qx, qy, qz.
Its output rows get ``roll_deg,pitch_deg``; with a reference orientation in the recording the
summary gives BROAD's inclination RMSE (`edge.tasks.attitude.metric.inclination_rmse`) over the
recording's scored samples (its ``movement`` mask), or all samples when it has none, skipping rows
without a reference.
"""
from __future__ import annotations

import math

import numpy as np

from edge.quaternion import quat_from_rotvec, quat_multiply, quat_normalize, quat_to_roll_pitch
from edge.tasks import QUAT_NAMES
from edge.tasks.attitude.metric import inclination_error_deg, inclination_rmse
from edge.tasks.attitude.settle import restart, settle, settling  # noqa: F401  (the registry's restart hooks)


def quaternion_columns(meta: dict) -> list | None:
    """Indices of the output columns that form an attitude quaternion, or None."""
    names = [str(o.get("name", "")).lower() for o in meta["outputs"]]
    if all(q in names for q in QUAT_NAMES):
        return [names.index(q) for q in QUAT_NAMES]
    if meta.get("task") == "attitude" and len(names) == 4:
        return [0, 1, 2, 3]
    return None


def quaternions(res) -> np.ndarray | None:
    """The replay's orientation estimates ``[N, 4]`` float64, or None."""
    cols = quaternion_columns(res.meta)
    return None if cols is None else res.y[:, cols].astype(np.float64)


def carry(y, meta, x, lag_s, rows) -> None:
    """Rule for quaternion outputs of a resampled replay: the latest model sample lies up to one model
    step before the input time; carry its orientation over that remaining `lag_s` with the input's own
    gyro sample, q ⊗ exp(ω·lag). Causal (it uses the current sample only) and it removes the lag that
    otherwise costs ω·dt of error in fast motion."""
    q_cols = quaternion_columns(meta)
    names = [str(c["name"]).lower() for c in meta["inputs"]]
    gyr = [names.index(g) for g in ("gyr_x", "gyr_y", "gyr_z") if g in names]
    units = {str(c.get("unit", "")) for c in meta["inputs"] if str(c["name"]).lower().startswith("gyr")}
    if q_cols is None or len(gyr) != 3 or units != {"rad/s"}:
        return
    q = y[rows][:, q_cols].astype(np.float64)
    turn = quat_from_rotvec(x[rows][:, gyr].astype(np.float64) * lag_s[rows, None])
    y[np.ix_(rows, q_cols)] = quat_normalize(quat_multiply(q, turn)).astype(np.float32)


def roll_pitch(res):
    q = quaternions(res)
    return (None, None) if q is None else quat_to_roll_pitch(q)


def extra_columns(res) -> list:
    """``roll_deg, pitch_deg`` beside the quaternion in the output file."""
    roll, pitch = roll_pitch(res)
    return [] if roll is None else [("roll_deg", roll), ("pitch_deg", pitch)]


def metric(rec, res, meta) -> dict | None:
    """BROAD's inclination RMSE (degrees) over the scored samples with a reference and an estimate."""
    q = quaternions(res)
    if q is None or rec.reference is None:
        return None
    mask = np.ones(len(rec), bool) if rec.scored is None else rec.scored.copy()
    mask &= np.all(np.isfinite(rec.reference), axis=1)
    estimated = np.all(np.isfinite(q), axis=1)
    first = int(np.argmax(estimated)) if estimated.any() else len(q)
    mask[:first] = False                               # rows before the first output have no estimate yet
    # a NaN/Inf estimate after that is a failure: the run is not scored, so it cannot look better than a clean one
    nonfinite = int((mask & ~estimated).sum())
    rmse = math.nan if nonfinite else inclination_rmse(q, rec.reference, mask)
    return {"inclination_rmse_deg": None if math.isnan(rmse) else rmse, "scored_samples": int(mask.sum()),
            "nonfinite_outputs": nonfinite, "mask": "movement" if rec.scored is not None else "all samples"}


def summary_fields(m: dict | None) -> dict:
    """The summary's top-level attitude keys (their names are part of `edge replay --json`)."""
    if not m:
        return {"inclination_rmse_deg": None, "scored_samples": None, "nonfinite_outputs": None, "metric": None}
    return {"inclination_rmse_deg": m["inclination_rmse_deg"], "scored_samples": m["scored_samples"],
            "nonfinite_outputs": m["nonfinite_outputs"],
            "metric": "BROAD inclination RMSE in degrees over the "
                      + ("scored (movement) samples" if m["mask"] == "movement" else "samples") + " with a reference"}


def summary_lines(m: dict | None) -> list[str]:
    if not m:
        return []
    v = m["inclination_rmse_deg"]
    if m["nonfinite_outputs"]:
        return [f"inclination RMSE refused: {m['nonfinite_outputs']:,} of {m['scored_samples']:,} scored outputs are "
                "NaN/Inf (a run with failed estimates is not scored)"]
    return ["inclination " + (f"RMSE {v:.3f}°" if v is not None else "RMSE n/a")
            + f" over {m['scored_samples']:,} {'scored ' if m['mask'] == 'movement' else ''}samples "
              "with a reference (BROAD metric)"]


def plot(rec, res, path, title: str, m: dict | None, meta) -> None:
    """Roll and pitch against the reference, and the inclination error."""
    from edge.replay import new_figure, shade_runs, thinning

    step, t = thinning(res)

    def unwrapped(angle):
        """Thinned angle with the ±180° wrap-arounds broken, so they draw no vertical line."""
        a = np.array(angle[::step], dtype=np.float64)
        a[1:][np.abs(np.diff(a)) > 180.0] = np.nan
        return a

    roll, pitch = roll_pitch(res)
    ref = rec.reference
    has_ref = ref is not None and np.isfinite(ref).any()
    rows = 3 if has_ref else 2
    fig, axes = new_figure(rows, 2.6)
    if has_ref:
        rr, pr = quat_to_roll_pitch(ref)
    for ax, est, name, r in ((axes[0], roll, "roll", rr if has_ref else None),
                             (axes[1], pitch, "pitch", pr if has_ref else None)):
        if r is not None:
            ax.plot(t, unwrapped(r), color="0.1", lw=1.6, label="reference")
        ax.plot(t, unwrapped(est), color="tab:orange", lw=1.0, label="estimate")
        ax.set_ylabel(f"{name} [°]")
        shade_runs(ax, res.t, res.held, "tab:red", "not fed (held)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, ncol=2)
    if has_ref:
        err = inclination_error_deg(quaternions(res), ref)
        ax = axes[2]
        shade_runs(ax, res.t, rec.scored, "tab:green", "scored (movement)")
        ax.plot(t, err[::step], color="tab:blue", lw=0.9, label="inclination error")
        ax.legend(loc="upper right", fontsize=8, ncol=2)
        ax.set_ylabel("inclination error [°]")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        rmse = m and m.get("inclination_rmse_deg")
        where = "scored (shaded)" if rec.scored is not None else "all"
        ax.set_title(f"inclination error — RMSE {rmse:.2f}° over {m['scored_samples']:,} {where} samples"
                     if rmse is not None else "inclination error (no scored sample with a reference)",
                     fontsize=10)
    axes[-1].set_xlabel("time [s]")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)
