"""Quaternion helpers (numpy only, vectorised): the algebra the runtime, the attitude task and the
simulators share.

Conventions used everywhere in `edge`:

* quaternions are ``[..., 4]`` arrays ordered ``w, x, y, z`` (Hamilton product);
* an attitude quaternion ``q`` maps sensor-frame vectors to the earth frame (ENU, z up):
  ``v_enu = q ⊗ v_sensor ⊗ q*``, the convention of BROAD, VQF and RIANN;
* the gyroscope rate ``ω`` is in the sensor frame, so ``dq/dt = ½ q ⊗ [0, ω]``;
* a level sensor at rest measures the specific force ``R(q)ᵀ (a_lin + g ẑ)``, i.e. ``+g`` on z.

"""
from __future__ import annotations

import numpy as np

__all__ = [
    "quat_multiply", "quat_conjugate", "quat_normalize", "quat_rotate", "quat_to_rotmat",
    "quat_from_axis_angle", "quat_from_rotvec", "quat_cumprod", "quat_slerp",
    "quat_to_roll_pitch", "quat_from_roll_pitch",
]


def _f64(q) -> np.ndarray:
    return np.asarray(q, dtype=np.float64)


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` of ``[..., 4]`` arrays (broadcasting)."""
    a, b = _f64(a), _f64(b)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conjugate(q) -> np.ndarray:
    """``q*`` (the inverse of a unit quaternion)."""
    q = _f64(q).copy()
    q[..., 1:] *= -1.0
    return q


def quat_normalize(q) -> np.ndarray:
    """``q / |q|``; rows with zero or non-finite norm become NaN (never a silent division warning)."""
    q = _f64(q)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = q / n
    bad = ~(np.isfinite(n) & (n > 0.0))
    if np.any(bad):
        out = np.where(bad, np.nan, out)
    return out


def quat_to_rotmat(q) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` of unit quaternions (``R @ v_sensor = v_enu``)."""
    w, x, y, z = np.moveaxis(_f64(q), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def quat_rotate(q, v, inverse: bool = False) -> np.ndarray:
    """Rotate vectors ``v [..., 3]`` by ``q`` (sensor -> earth); ``inverse=True`` for earth -> sensor."""
    R = quat_to_rotmat(q)
    v = _f64(v)
    if inverse:
        return np.einsum("...ji,...j->...i", R, v)
    return np.einsum("...ij,...j->...i", R, v)


def quat_from_axis_angle(axis, angle_rad) -> np.ndarray:
    """Quaternion of a rotation by ``angle_rad`` about ``axis`` (normalised here)."""
    axis = _f64(axis)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * _f64(angle_rad)[..., None]
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def quat_from_rotvec(r) -> np.ndarray:
    """Exponential map: rotation vector ``r [..., 3]`` (axis·angle, rad) -> unit quaternion.

    Exact for any angle; the small-angle branch uses the Taylor series of sin(θ/2)/θ.
    """
    r = _f64(r)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    small = theta < 1e-6
    safe = np.where(small, 1.0, theta)
    k = np.where(small, 0.5 - theta * theta / 48.0, np.sin(0.5 * safe) / safe)
    return np.concatenate([np.cos(0.5 * theta), k * r], axis=-1)


def quat_cumprod(dq) -> np.ndarray:
    """Running products ``out[k] = dq[0] ⊗ dq[1] ⊗ … ⊗ dq[k]`` along axis 0, vectorised.

    A Hillis–Steele scan: ``ceil(log2 N)`` vectorised products instead of an N-step Python loop
    (the product is associative, so the grouping does not change the result beyond rounding).
    """
    out = _f64(dq).copy()
    n = out.shape[0]
    shift = 1
    while shift < n:
        out[shift:] = quat_multiply(out[:-shift], out[shift:])
        shift *= 2
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def quat_slerp(q0, q1, f) -> np.ndarray:
    """Spherical interpolation between ``q0`` and ``q1`` at fraction ``f`` (shortest arc).

    Falls back to normalised linear interpolation where the two are nearly equal. NaN in either
    end gives NaN.
    """
    q0, q1 = _f64(q0), _f64(q1)
    f = _f64(f)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    near = theta < 1e-4
    sin_t = np.where(near, 1.0, np.sin(theta))
    w0 = np.where(near, 1.0 - f, np.sin((1.0 - f) * theta) / sin_t)
    w1 = np.where(near, f, np.sin(f * theta) / sin_t)
    return quat_normalize(w0 * q0 + w1 * q1)


def quat_to_roll_pitch(q) -> tuple[np.ndarray, np.ndarray]:
    """Roll and pitch in degrees (intrinsic z-y'-x'' Euler angles of the sensor-to-ENU ``q``).

    Heading (yaw) is left out on purpose: a 6-D IMU cannot observe it.
    """
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    roll = np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2.0 * (w * y - z * x), -1.0, 1.0))
    return np.degrees(roll), np.degrees(pitch)


def quat_from_roll_pitch(roll_deg, pitch_deg, yaw_deg=0.0) -> np.ndarray:
    """Inverse of `quat_to_roll_pitch` (plus an optional heading): ``q = q_z(yaw) ⊗ q_y(pitch) ⊗ q_x(roll)``."""
    r, p, y = (np.radians(_f64(a)) for a in (roll_deg, pitch_deg, yaw_deg))
    r, p, y = np.broadcast_arrays(r, p, y)
    qx = quat_from_axis_angle([1.0, 0.0, 0.0], r)
    qy = quat_from_axis_angle([0.0, 1.0, 0.0], p)
    qz = quat_from_axis_angle([0.0, 0.0, 1.0], y)
    return quat_multiply(qz, quat_multiply(qy, qx))
