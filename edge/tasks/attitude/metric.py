"""The BROAD attitude metric (``example_code/broad_utils.py``): the error quaternion in the earth frame
``e = q̂ ⊗ q⁻¹``, normalised, and the inclination error ``2·acos(clip(√(e_w² + e_z²), 0, 1))``,
which ignores any heading (rotation about the vertical) difference — a 6-D IMU cannot observe it.
"""
from __future__ import annotations

import numpy as np

from edge.quaternion import quat_conjugate, quat_multiply, quat_normalize

__all__ = ["error_quat_earth", "inclination_error_deg", "heading_error_deg", "total_error_deg", "inclination_rmse"]


def _f64(q) -> np.ndarray:
    return np.asarray(q, dtype=np.float64)


def error_quat_earth(q_est, q_ref) -> np.ndarray:
    """BROAD's error quaternion in the earth frame: ``e = q̂ ⊗ q⁻¹`` with both inputs and ``e``
    normalised (``broad_utils.calculateErrorQuatEarth``). NaN rows stay NaN."""
    e = quat_multiply(quat_normalize(q_est), quat_conjugate(quat_normalize(q_ref)))
    return quat_normalize(e)


def inclination_error_deg(q_est, q_ref) -> np.ndarray:
    """Inclination error in degrees, exactly as BROAD: ``2·acos(clip(√(e_w² + e_z²), 0, 1))``.

    Invariant to any heading difference (rotation of the estimate about the earth's vertical).
    NaN where either input is NaN.
    """
    e = error_quat_earth(q_est, q_ref)
    c = np.sqrt(e[..., 0] ** 2 + e[..., 3] ** 2)
    with np.errstate(invalid="ignore"):
        return np.degrees(2.0 * np.arccos(np.clip(c, 0.0, 1.0)))


def heading_error_deg(q_est, q_ref) -> np.ndarray:
    """BROAD's heading error ``2·atan(|e_z / e_w|)`` in degrees (for 9-D estimators)."""
    e = error_quat_earth(q_est, q_ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.degrees(2.0 * np.arctan(np.abs(e[..., 3] / e[..., 0])))


def total_error_deg(q_est, q_ref) -> np.ndarray:
    """BROAD's total rotation error ``2·acos(|e_w|)`` in degrees."""
    e = error_quat_earth(q_est, q_ref)
    with np.errstate(invalid="ignore"):
        return np.degrees(2.0 * np.arccos(np.clip(np.abs(e[..., 0]), 0.0, 1.0)))


def inclination_rmse(q_est, q_ref, scored=None, *, skip_nan_estimate: bool = False) -> float:
    """Inclination RMSE in degrees over the scored samples, as BROAD's ``calculateRMSE``.

    * ``scored``: boolean mask ``[N]`` (BROAD's ``movement``); ``None`` scores every sample.
    * Rows whose reference is NaN (motion-capture occlusion) are skipped.
    * A NaN *estimate* on a scored row with a valid reference makes the result NaN unless
      ``skip_nan_estimate=True``: BROAD's ``nanmean`` would silently skip it, which lets a broken
      estimator look good, so here the caller has to ask for that.
    * Returns NaN when no scored row has a reference.
    """
    q_est, q_ref = _f64(q_est), _f64(q_ref)
    if q_est.shape != q_ref.shape or q_est.ndim != 2 or q_est.shape[1] != 4:
        raise ValueError(f"inclination_rmse: expected two [N, 4] arrays, got {q_est.shape} and {q_ref.shape}")
    mask = np.ones(len(q_ref), dtype=bool) if scored is None else np.asarray(scored, dtype=bool).copy()
    if mask.shape != (len(q_ref),):
        raise ValueError(f"inclination_rmse: scored mask has shape {mask.shape}, expected ({len(q_ref)},)")
    mask &= np.all(np.isfinite(q_ref), axis=1)
    if skip_nan_estimate:
        mask &= np.all(np.isfinite(q_est), axis=1)
    if not mask.any():
        return float("nan")
    err = inclination_error_deg(q_est[mask], q_ref[mask])
    return float(np.sqrt(np.mean(err * err)))
