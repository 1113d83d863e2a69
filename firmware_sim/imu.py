"""Synthetic 6-D IMU with exact ground truth (numpy only): ``edge.firmware_sim.imu``.

A smooth random motion is defined *analytically*, so it can be sampled at any rate:

* the body angular rate ``ω(t)`` (sensor frame) is a sum of random sinusoids (per axis, random
  frequencies up to ``rot_bandwidth_hz``, random phases), scaled to ``rot_intensity`` rad/s RMS;
* the position ``p(t)`` (ENU) is another sum of sinusoids, scaled so that its second derivative —
  the linear acceleration — has ``lin_intensity`` m/s² RMS;
* rests: a smooth envelope ``e(t) ∈ [0, 1]`` (raised-cosine ramps of ``ramp_s``) is 0 while the
  sensor rests. The motion runs on a warped clock ``τ(t) = ∫ e dt`` that stops during rests, so
  ``ω(t) = e(t) Ω(τ(t))`` and ``p(t) = P(τ(t))``: the sensor really is still (zero rate, zero
  velocity, zero acceleration) and resumes where it stopped.

The reference orientation ``q(t)`` (sensor-to-ENU, w,x,y,z, z up) solves ``dq/dt = ½ q ⊗ [0, ω]``;
it is integrated with the fourth-order Magnus (two-point Gauss) step on an internal grid of at least
``internal_rate_hz`` (default 600 Hz, and at least one step per output sample), using the analytic rate
between samples: compared with a 20 kHz grid, the orientation differs by < 1e-6° after a minute of
4 rad/s motion at 50–285 Hz. Integrating the output gyro therefore reproduces it as far as the
integrator used allows (the tests' RK4 at 285.7 Hz: ≈2e-5° over 10 s).

Measurements, in SI units like a real IMU:

* accelerometer = specific force ``R(q)ᵀ (a_lin + g ẑ)`` (a level sensor at rest reads +g on z);
* gyroscope = ``ω`` in the sensor frame, rad/s;

then the sensor errors of `ImuErrors`: per-axis scale error, constant bias, random-walk bias drift,
white noise (given as a density, so its per-sample std follows the rate), quantisation and
saturation. ``errors=None`` gives the exact (noiseless) measurements.

Everything is deterministic in ``seed``; the trajectory and the sensor errors use separate random
streams, so the same seed gives the same motion with or without errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge.quaternion import quat_cumprod, quat_from_rotvec, quat_multiply, quat_normalize, quat_rotate
from edge.io.recordings import STANDARD_GRAVITY, Recording

__all__ = ["ImuErrors", "SmoothTrajectory", "random_trajectory", "synthetic_imu", "BROAD_LOCAL_GRAVITY"]

# m/s², BROAD's value: a sensor's local gravity is data (the default of `synthetic_imu(gravity=...)`), not the unit g
BROAD_LOCAL_GRAVITY = 9.81
_DEG = math.pi / 180.0


@dataclass(frozen=True)
class ImuErrors:
    """Sensor error model. The defaults resemble BROAD's myon aktos-t (measured at rest in trial 01:
    gyro noise ≈0.0016–0.0023 rad/s and acc noise ≈0.044–0.074 m/s² per sample at 285.7 Hz, gyro
    bias up to ≈0.008 rad/s, 16-bit ±2000 °/s and ±16 g ranges).

    Biases and scale errors are drawn per axis from N(0, value²) for each recording.
    """
    gyr_noise_density: float = 1.2e-4      # rad/s/√Hz  (per-sample std = density · √rate)
    acc_noise_density: float = 3.5e-3      # m/s²/√Hz
    gyr_bias: float = 0.01                 # rad/s, std of the constant bias per axis
    acc_bias: float = 0.05                 # m/s²
    gyr_bias_walk: float = 1e-4            # rad/s/√s, bias random walk
    acc_bias_walk: float = 1e-3            # m/s²/√s
    gyr_scale: float = 0.005               # std of the per-axis scale error (fraction)
    acc_scale: float = 0.005
    gyr_range: float = 2000.0 * _DEG       # saturation, rad/s
    acc_range: float = 16.0 * STANDARD_GRAVITY  # saturation, m/s²
    gyr_lsb: float = 0.0                   # quantisation step, rad/s (0: none)
    acc_lsb: float = 0.0                   # m/s²

    @classmethod
    def ideal(cls) -> "ImuErrors":
        """No error at all (same as ``errors=None``)."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.inf, math.inf, 0.0, 0.0)

    def scaled(self, factor: float) -> "ImuErrors":
        """Noise, biases, drifts and scale errors times ``factor`` (ranges and LSBs unchanged)."""
        f = float(factor)
        return ImuErrors(self.gyr_noise_density * f, self.acc_noise_density * f, self.gyr_bias * f,
                         self.acc_bias * f, self.gyr_bias_walk * f, self.acc_bias_walk * f,
                         self.gyr_scale * f, self.acc_scale * f, self.gyr_range, self.acc_range,
                         self.gyr_lsb, self.acc_lsb)


class _SumOfSines:
    """``f(τ) = Σ_k A_k sin(2π f_k τ + φ_k)`` per axis, with analytic derivatives."""

    def __init__(self, amp, freq, phase):
        self.amp, self.freq, self.phase = (np.asarray(a, dtype=np.float64) for a in (amp, freq, phase))  # [3, K]

    def __call__(self, tau, deriv: int = 0) -> np.ndarray:
        tau = np.asarray(tau, dtype=np.float64)
        out = np.zeros(tau.shape + (3,))
        w = 2.0 * np.pi * self.freq
        for axis in range(3):
            for a, wk, ph in zip(self.amp[axis], w[axis], self.phase[axis]):
                # d^n/dτ^n sin(wτ + φ) = w^n sin(wτ + φ + nπ/2)
                out[..., axis] += a * wk ** deriv * np.sin(wk * tau + ph + deriv * 0.5 * np.pi)
        return out

    @classmethod
    def random(cls, rng, rms_of_deriv: float, deriv: int, f_lo: float, f_hi: float, k: int = 12):
        """Random components, scaled so that the ``deriv``-th derivative has total RMS ``rms_of_deriv``
        (summed over the three axes, i.e. the RMS of the vector norm)."""
        freq = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), size=(3, k)))
        phase = rng.uniform(0.0, 2.0 * np.pi, size=(3, k))
        amp = rng.rayleigh(1.0, size=(3, k)) * (2.0 * np.pi * freq) ** (-deriv)
        rms = math.sqrt(0.5 * np.sum((amp * (2.0 * np.pi * freq) ** deriv) ** 2))
        amp *= 0.0 if rms == 0.0 else rms_of_deriv / rms
        return cls(amp, freq, phase)


class SmoothTrajectory:
    """An analytic motion: rest envelope, warped clock, body rate and position (see module doc)."""

    def __init__(self, omega: _SumOfSines, position: _SumOfSines,
                 motion: Sequence[tuple[float, float]], ramp_s: float):
        self.omega_fn, self.position_fn = omega, position
        self.motion = [(float(a), float(b)) for a, b in motion]   # moving intervals, ramps inside
        self.ramp_s = float(ramp_s)

    # raised-cosine step S(u) on [0, T], its derivative and its integral
    def _S(self, u):
        T = self.ramp_s
        return np.where(u <= 0, 0.0, np.where(u >= T, 1.0, 0.5 * (1.0 - np.cos(np.pi * np.clip(u, 0, T) / T))))

    def _dS(self, u):
        T = self.ramp_s
        inside = (u > 0) & (u < T)
        return np.where(inside, 0.5 * np.pi / T * np.sin(np.pi * np.clip(u, 0, T) / T), 0.0)

    def _IS(self, u):
        T = self.ramp_s
        uc = np.clip(u, 0, T)
        ramp = 0.5 * (uc - T / np.pi * np.sin(np.pi * uc / T))
        return np.where(u <= 0, 0.0, np.where(u >= T, u - 0.5 * T, ramp))

    def envelope(self, t, deriv: int = 0) -> np.ndarray:
        """``e(t)`` (1 moving, 0 resting), its derivative (``deriv=1``) or its integral ``τ(t)`` (``deriv=-1``)."""
        t = np.asarray(t, dtype=np.float64)
        f = {0: self._S, 1: self._dS, -1: self._IS}[deriv]
        if not self.motion:
            return np.zeros_like(t)
        a = np.array([m[0] for m in self.motion])
        b = np.array([m[1] for m in self.motion]) - self.ramp_s       # start of each ramp down
        k = np.searchsorted(a, t, side="right") - 1                     # the interval t falls in (or after)
        before = k < 0
        k = np.maximum(k, 0)
        out = f(t - a[k]) - f(t - b[k])
        if deriv == -1:   # plus the whole warped time of the earlier intervals
            done = np.concatenate([[0.0], np.cumsum(b - a)])
            out = out + done[k]
        return np.where(before, 0.0, out)

    def omega(self, t) -> np.ndarray:
        """Body angular rate ``[..., 3]`` in rad/s (sensor frame)."""
        return self.envelope(t)[..., None] * self.omega_fn(self.envelope(t, -1))

    def position(self, t) -> np.ndarray:
        return self.position_fn(self.envelope(t, -1))

    def lin_acc(self, t) -> np.ndarray:
        """Linear acceleration ``d²p/dt²`` in ENU, m/s²: ``e'·P'(τ) + e²·P''(τ)``."""
        tau, e, de = self.envelope(t, -1), self.envelope(t), self.envelope(t, 1)
        return de[..., None] * self.position_fn(tau, 1) + (e * e)[..., None] * self.position_fn(tau, 2)

    def orientation(self, t_out, q0, internal_rate_hz: float = 600.0) -> np.ndarray:
        """Integrate ``dq/dt = ½ q ⊗ ω`` from ``q0`` at ``t_out[0]`` to every ``t_out`` (uniform grid),
        with ``S = ceil(internal_rate / rate)`` fourth-order Magnus steps per output interval."""
        t_out = np.asarray(t_out, dtype=np.float64)
        n = len(t_out)
        q0 = quat_normalize(np.asarray(q0, dtype=np.float64))
        if n == 1:
            return q0[None].copy()
        dt = float(t_out[1] - t_out[0])
        S = max(1, int(math.ceil(internal_rate_hz * dt - 1e-9)))
        h = dt / S
        c = math.sqrt(3.0) / 6.0
        out = np.empty((n, 4))
        out[0] = q0
        chunk = max(1, (1 << 18) // S)                  # output intervals per chunk (bounded memory)
        for k0 in range(0, n - 1, chunk):
            k1 = min(n - 1, k0 + chunk)
            start = t_out[0] + dt * k0 + h * np.arange((k1 - k0) * S)
            w1 = self.omega(start + (0.5 - c) * h)
            w2 = self.omega(start + (0.5 + c) * h)
            theta = 0.5 * h * (w1 + w2) + (math.sqrt(3.0) / 12.0) * h * h * np.cross(w1, w2)
            q = quat_cumprod(quat_from_rotvec(theta))[S - 1::S]
            out[k0 + 1:k1 + 1] = quat_normalize(quat_multiply(out[k0], q))
        return out


def _motion_intervals(rng, duration_s, rests, rest_duration_s, initial_rest_s, ramp_s):
    """Moving intervals ``[(a, b)]`` covering ``[0, duration]`` minus the rests (ramps inside them)."""
    min_motion = 2.0 * ramp_s + 0.1
    if isinstance(rests, (int, np.integer)):
        r = int(rests)
        if r < 0:
            raise ValueError("rests must be >= 0 or a list of (start, end) seconds")
        if r == 0:   # at most an initial rest, then motion to the end (none if the rest fills it)
            return [(-ramp_s if initial_rest_s <= 0 else initial_rest_s, duration_s + 10.0 * ramp_s + 1.0)] \
                if initial_rest_s < duration_s else []
        d = rng.uniform(*rest_duration_s, size=r)
        moving = duration_s - initial_rest_s - d.sum()
        if moving < (r + 1) * min_motion:
            raise ValueError(f"{r} rests of {rest_duration_s} s do not fit into {duration_s} s")
        parts = min_motion + (moving - (r + 1) * min_motion) * rng.dirichlet(np.ones(r + 1))
        intervals, t = [], initial_rest_s
        for k in range(r + 1):
            intervals.append((t, t + parts[k]))
            t += parts[k] + (d[k] if k < r else 0.0)
    else:
        spans = sorted((float(a), float(b)) for a, b in rests)
        if initial_rest_s > 0:
            spans = [(0.0, initial_rest_s)] + spans
        intervals, t = [], 0.0
        for a, b in spans:
            if b <= a or a < t:
                raise ValueError(f"rest intervals must be increasing and disjoint, got {rests}")
            if a - t > 0:
                if a - t < min_motion and t > 0:
                    raise ValueError(f"motion between rests must last at least {min_motion:g} s")
                intervals.append((t, a))
            t = b
        if t < duration_s:
            intervals.append((t, duration_s))
    # motion that starts at 0 is already moving (ramp before 0); motion that reaches the end keeps going
    out = []
    for a, b in intervals:
        if a <= 0.0:
            a = -ramp_s
        if b >= duration_s - 1e-12:
            b = duration_s + 10.0 * ramp_s + 1.0
        out.append((a, b))
    return out


def random_trajectory(duration_s: float, *, seed=0, rot_intensity: float = 1.0, rot_bandwidth_hz: float = 1.5,
                      lin_intensity: float = 1.0, lin_bandwidth_hz: float = 1.0, rests=0,
                      rest_duration_s: tuple[float, float] = (1.0, 3.0), initial_rest_s: float = 0.0,
                      ramp_s: float = 0.25, rng: np.random.Generator | None = None) -> SmoothTrajectory:
    """A random `SmoothTrajectory` (see `synthetic_imu` for the parameters)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    omega = _SumOfSines.random(rng, rot_intensity, 0, rot_bandwidth_hz / 20.0, rot_bandwidth_hz)
    position = _SumOfSines.random(rng, lin_intensity, 2, lin_bandwidth_hz / 10.0, lin_bandwidth_hz)
    motion = _motion_intervals(rng, duration_s, rests, rest_duration_s, initial_rest_s, ramp_s)
    return SmoothTrajectory(omega, position, motion, ramp_s)


def _random_quat(rng) -> np.ndarray:
    return quat_normalize(rng.standard_normal(4))


def synthetic_imu(duration_s: float = 60.0, rate_hz: float = 2000.0 / 7.0, *, seed=0,
                  rot_intensity: float = 1.0, rot_bandwidth_hz: float = 1.5,
                  lin_intensity: float = 1.0, lin_bandwidth_hz: float = 1.0,
                  rests=0, rest_duration_s: tuple[float, float] = (1.0, 3.0), initial_rest_s: float = 0.0,
                  ramp_s: float = 0.25, initial="random", errors: ImuErrors | None = ImuErrors(),
                  gravity: float = BROAD_LOCAL_GRAVITY, internal_rate_hz: float = 600.0) -> Recording:
    """A synthetic IMU recording with its exact reference orientation.

    * ``rot_intensity``: RMS of the body rate while moving, rad/s; ``rot_bandwidth_hz`` its highest
      frequency. ``lin_intensity``: RMS of the linear acceleration while moving, m/s²;
      ``lin_bandwidth_hz`` likewise.
    * ``rests``: a number of randomly placed rests (durations drawn from ``rest_duration_s``), or an
      explicit list of ``(start, end)`` seconds; ``initial_rest_s`` rests at the start; ``ramp_s`` is
      the smooth start/stop time.
    * ``initial``: ``"random"`` (uniform over all orientations), ``"level"`` (random heading, no tilt)
      or a quaternion (w, x, y, z).
    * ``errors``: an `ImuErrors` or None for exact measurements.

    Returns a `Recording` (channels acc_x..gyr_z in m/s² and rad/s, ``reference`` the exact
    orientation, ``scored`` the moving samples, like BROAD's ``movement``). ``meta`` holds the truth:
    ``gyr_true``, ``acc_true`` (noiseless measurements), ``lin_acc_enu``, and the drawn ``gyr_bias`` /
    ``acc_bias`` (constant parts) and ``gyr_scale`` / ``acc_scale``.
    """
    if not (duration_s > 0 and rate_hz > 0):
        raise ValueError("duration_s and rate_hz must be positive")
    traj_ss, init_ss, err_ss = np.random.SeedSequence(seed).spawn(3)
    traj = random_trajectory(duration_s, rot_intensity=rot_intensity, rot_bandwidth_hz=rot_bandwidth_hz,
                             lin_intensity=lin_intensity, lin_bandwidth_hz=lin_bandwidth_hz, rests=rests,
                             rest_duration_s=rest_duration_s, initial_rest_s=initial_rest_s, ramp_s=ramp_s,
                             rng=np.random.default_rng(traj_ss))
    init_rng = np.random.default_rng(init_ss)
    if isinstance(initial, str):
        if initial == "random":
            q0 = _random_quat(init_rng)
        elif initial == "level":
            yaw = init_rng.uniform(-np.pi, np.pi)
            q0 = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
        else:
            raise ValueError(f"initial must be 'random', 'level' or a quaternion, got {initial!r}")
    else:
        q0 = quat_normalize(np.asarray(initial, dtype=np.float64).reshape(4))

    n = int(math.floor(duration_s * rate_hz + 1e-9)) + 1
    t = np.arange(n, dtype=np.float64) / rate_hz
    q = traj.orientation(t, q0, internal_rate_hz)
    gyr_true = traj.omega(t)
    lin = traj.lin_acc(t)
    acc_true = quat_rotate(q, lin + np.array([0.0, 0.0, gravity]), inverse=True)
    scored = traj.envelope(t) > 0.0

    meta = {"synthetic": True, "seed": seed, "gravity": gravity, "gyr_true": gyr_true, "acc_true": acc_true,
            "lin_acc_enu": lin}
    gyr, acc = gyr_true, acc_true
    if errors is not None:
        rng = np.random.default_rng(err_ss)
        gyr, g_info = _apply_errors(rng, gyr_true, rate_hz, errors.gyr_noise_density, errors.gyr_bias,
                                    errors.gyr_bias_walk, errors.gyr_scale, errors.gyr_range, errors.gyr_lsb)
        acc, a_info = _apply_errors(rng, acc_true, rate_hz, errors.acc_noise_density, errors.acc_bias,
                                    errors.acc_bias_walk, errors.acc_scale, errors.acc_range, errors.acc_lsb)
        meta.update({"gyr_bias": g_info[0], "gyr_scale": g_info[1], "acc_bias": a_info[0], "acc_scale": a_info[1],
                     "errors": errors})
    return Recording.from_imu(acc, gyr, rate_hz=rate_hz, t=t, reference=q, scored=scored,
                              source=f"synthetic(seed={seed}, {duration_s:g} s at {rate_hz:g} Hz)", meta=meta)


def _apply_errors(rng, x, rate_hz, density, bias_std, walk, scale_std, limit, lsb):
    n = len(x)
    scale = 1.0 + scale_std * rng.standard_normal(3)
    bias = bias_std * rng.standard_normal(3)
    drift = np.cumsum(rng.standard_normal((n, 3)) * (walk / math.sqrt(rate_hz)), axis=0)
    drift -= drift[0]
    noise = rng.standard_normal((n, 3)) * (density * math.sqrt(rate_hz))
    y = x * scale + bias + drift + noise
    if lsb > 0:
        y = np.round(y / lsb) * lsb
    return np.clip(y, -limit, limit), (bias, scale)
