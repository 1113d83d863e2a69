"""Synthetic IMU (edge.firmware_sim.imu): the physics is checked against independent computations —
gravity at rest, gyro integration by a separate RK4 integrator, inclination from the accelerometer,
linear acceleration as the second derivative of position — and the error model by its statistics."""
import math

import numpy as np
import pytest

from edge.quaternion import quat_multiply, quat_normalize, quat_rotate
from edge.tasks.attitude.metric import inclination_error_deg, total_error_deg
from edge.firmware_sim.imu import ImuErrors, random_trajectory, synthetic_imu
from edge.io.recordings import IMU_CHANNELS, Recording

RATE = 2000.0 / 7.0          # BROAD's 285.714 Hz
G = 9.81


def rk4_integrate(q0, gyr, dt):
    """Independent strapdown integration of dq/dt = ½ q ⊗ [0, ω] over gyro samples: classical RK4,
    with ω at the half step from four-point cubic interpolation of the samples (fourth order)."""
    w = np.asarray(gyr, dtype=np.float64)
    n = len(w)
    mid = 0.5 * (w[:-1] + w[1:])                                     # linear at the two ends
    mid[1:-1] = (-w[:-3] + 9.0 * w[1:-2] + 9.0 * w[2:-1] - w[3:]) / 16.0

    def deriv(q, om):
        return 0.5 * quat_multiply(q, np.array([0.0, om[0], om[1], om[2]]))

    q = np.empty((n, 4))
    q[0] = q0
    for k in range(n - 1):
        qk = q[k]
        k1 = deriv(qk, w[k])
        k2 = deriv(qk + 0.5 * dt * k1, mid[k])
        k3 = deriv(qk + 0.5 * dt * k2, mid[k])
        k4 = deriv(qk + dt * k3, w[k + 1])
        qn = qk + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        q[k + 1] = qn / np.linalg.norm(qn)
    return q


def angle_deg(a, b):
    """Rotation angle between orientations, accurate for tiny angles (asin form)."""
    e = quat_multiply(quat_normalize(a), quat_normalize(b) * np.array([1, -1, -1, -1]))
    return np.degrees(2.0 * np.arcsin(np.clip(np.linalg.norm(e[..., 1:], axis=-1), 0, 1)))


def test_level_sensor_at_rest_reads_plus_g_on_z():
    rec = synthetic_imu(2.0, RATE, seed=0, initial="level", initial_rest_s=2.0, errors=None)
    assert isinstance(rec, Recording) and rec.channels == list(IMU_CHANNELS)
    assert rec.units == ["m/s^2"] * 3 + ["rad/s"] * 3
    np.testing.assert_allclose(rec.acc, np.tile([0.0, 0.0, G], (len(rec), 1)), atol=1e-5)
    assert np.all(rec.gyr == 0.0)
    assert angle_deg(rec.reference, rec.reference[:1]).max() < 1e-9
    assert not rec.scored.any()                  # nothing moves, nothing is scored (like BROAD)


def test_a_rest_inside_motion_is_really_still():
    rec = synthetic_imu(20.0, RATE, seed=4, rests=[(8.0, 11.0)], errors=None, rot_intensity=2.0,
                      lin_intensity=3.0)
    rest = (rec.t >= 8.0) & (rec.t <= 11.0)
    moving = (rec.t > 1.0) & (rec.t < 7.5)
    assert np.all(rec.gyr[rest] == 0.0)
    np.testing.assert_allclose(np.linalg.norm(rec.acc[rest], axis=1), G, atol=1e-5)
    assert angle_deg(rec.reference[rest], rec.reference[rest][:1]).max() < 1e-9
    assert not rec.scored[rest].any() and rec.scored[moving].all()
    # and it does move outside the rest, at about the requested intensity
    rms = np.sqrt(np.mean(np.sum(rec.gyr[moving].astype(np.float64) ** 2, axis=1)))
    assert 0.5 < rms < 4.0


def test_integrating_the_noiseless_gyro_reproduces_the_reference():
    rec = synthetic_imu(10.0, RATE, seed=1, errors=None, rot_intensity=2.0, rot_bandwidth_hz=2.0)
    gyr = rec.meta["gyr_true"]
    assert np.sqrt(np.mean(np.sum(gyr.astype(np.float64) ** 2, axis=1))) > 1.0   # a vigorous motion
    total_turn = np.degrees(np.sum(np.linalg.norm(gyr, axis=1)) / RATE)
    assert total_turn > 500.0
    # the float32 channel is what a consumer sees; the float64 truth pins the simulator itself
    q64 = rk4_integrate(rec.reference[0], rec.meta["gyr_true"].astype(np.float64), 1.0 / RATE)
    q32 = rk4_integrate(rec.reference[0], rec.gyr, 1.0 / RATE)
    assert angle_deg(q32, rec.reference).max() < 0.01
    assert angle_deg(q64, rec.reference).max() < 0.01


def test_gyro_integration_error_is_not_hidden_by_a_loose_tolerance():
    """A first-order (Euler) integration at the same rate does drift past 0.01°: the bound above means
    something, and the reference is not just the gyro integrated the same way."""
    rec = synthetic_imu(10.0, RATE, seed=1, errors=None, rot_intensity=2.0, rot_bandwidth_hz=2.0)
    w = rec.meta["gyr_true"].astype(np.float64)
    q = np.empty((len(w), 4))
    q[0] = rec.reference[0]
    for k in range(len(w) - 1):
        qn = q[k] + 0.5 / RATE * quat_multiply(q[k], np.concatenate([[0.0], w[k]]))
        q[k + 1] = qn / np.linalg.norm(qn)
    assert angle_deg(q, rec.reference).max() > 0.01


def test_accelerometer_inclination_equals_reference_without_linear_acceleration():
    rec = synthetic_imu(10.0, RATE, seed=2, errors=None, lin_intensity=0.0, rot_intensity=1.5)
    acc = rec.acc.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(acc, axis=1), G, rtol=1e-6)
    # tilt-only quaternion from the accelerometer: rotate the measured "up" onto the earth's z axis
    a = acc / np.linalg.norm(acc, axis=1, keepdims=True)
    z = np.array([0.0, 0.0, 1.0])
    q_acc = quat_normalize(np.concatenate([(1.0 + a @ z)[:, None], np.cross(a, z)], axis=1))
    incl = inclination_error_deg(q_acc, rec.reference)
    assert np.nanmax(incl) < 1e-3
    assert total_error_deg(q_acc, rec.reference).max() > 1.0     # heading differs, and is ignored


def test_specific_force_is_gravity_plus_linear_acceleration_of_a_smooth_position():
    rec = synthetic_imu(20.0, RATE, seed=5, errors=None, lin_intensity=2.0, rests=2)
    lin = rec.meta["lin_acc_enu"].astype(np.float64)
    f_enu = quat_rotate(rec.reference, rec.acc.astype(np.float64))
    np.testing.assert_allclose(f_enu, lin + [0.0, 0.0, G], atol=2e-5)
    assert np.sqrt(np.mean(np.sum(lin ** 2, axis=1))) > 0.5
    # the linear acceleration is the second derivative of the (bounded) position, rests included
    traj = random_trajectory(20.0, seed=3, lin_intensity=2.0, rests=2, initial_rest_s=1.0)
    h = 1e-3
    t = np.arange(0.0, 20.0, 0.01)
    p2 = (traj.position(t + h) - 2 * traj.position(t) + traj.position(t - h)) / h ** 2
    # (away from the ramp edges, where the jerk jumps and the finite difference straddles a kink)
    edges = np.array([e for a, b in traj.motion for e in (a, a + traj.ramp_s, b - traj.ramp_s, b)])
    smooth = np.min(np.abs(t[:, None] - edges[None, :]), axis=1) > 2 * h
    assert smooth.mean() > 0.95
    np.testing.assert_allclose(traj.lin_acc(t)[smooth], p2[smooth], atol=1e-4)
    still = traj.envelope(t) == 0.0
    assert still.any() and np.all(traj.lin_acc(t)[still] == 0.0) and np.all(traj.omega(t)[still] == 0.0)


def test_any_rate_samples_the_same_motion():
    a = synthetic_imu(5.0, 100.0, seed=7, errors=None)
    b = synthetic_imu(5.0, 200.0, seed=7, errors=None)
    assert len(a) == 501 and len(b) == 1001 and a.rate_hz == 100.0
    np.testing.assert_allclose(a.t, b.t[::2])
    np.testing.assert_allclose(a.gyr, b.gyr[::2], atol=1e-6)
    np.testing.assert_allclose(a.acc, b.acc[::2], atol=1e-5)
    assert angle_deg(a.reference, b.reference[::2]).max() < 1e-6


def test_deterministic_in_the_seed_and_errors_do_not_change_the_motion():
    a = synthetic_imu(3.0, RATE, seed=11)
    b = synthetic_imu(3.0, RATE, seed=11)
    c = synthetic_imu(3.0, RATE, seed=12)
    ideal = synthetic_imu(3.0, RATE, seed=11, errors=None)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.reference, b.reference)
    assert not np.allclose(a.x, c.x)
    assert np.array_equal(a.reference, ideal.reference)        # same trajectory stream
    assert not np.array_equal(a.x, ideal.x)                    # but with sensor errors


def test_white_noise_follows_the_density_at_any_rate():
    for rate in (100.0, 400.0):
        err = ImuErrors(gyr_noise_density=1e-3, acc_noise_density=1e-2, gyr_bias=0, acc_bias=0, gyr_bias_walk=0,
                        acc_bias_walk=0, gyr_scale=0, acc_scale=0)
        rec = synthetic_imu(50.0, rate, seed=3, initial="level", initial_rest_s=50.0, errors=err)
        np.testing.assert_allclose(rec.gyr.std(axis=0), 1e-3 * math.sqrt(rate), rtol=0.05)
        np.testing.assert_allclose((rec.acc - [0, 0, G]).std(axis=0), 1e-2 * math.sqrt(rate), rtol=0.05)
        assert np.abs(rec.gyr.mean(axis=0)).max() < 4 * 1e-3 * math.sqrt(rate) / math.sqrt(len(rec))


def test_bias_scale_and_bias_walk():
    err = ImuErrors(gyr_noise_density=0, acc_noise_density=0, gyr_bias=0.02, acc_bias=0.1, gyr_bias_walk=0,
                    acc_bias_walk=0, gyr_scale=0.01, acc_scale=0.01)
    rec = synthetic_imu(10.0, RATE, seed=8, errors=err)
    truth_g = rec.meta["gyr_true"].astype(np.float64)
    truth_a = rec.meta["acc_true"].astype(np.float64)
    np.testing.assert_allclose(rec.gyr, truth_g * rec.meta["gyr_scale"] + rec.meta["gyr_bias"], atol=1e-6)
    np.testing.assert_allclose(rec.acc, truth_a * rec.meta["acc_scale"] + rec.meta["acc_bias"], atol=1e-5)
    assert np.abs(rec.meta["gyr_bias"]).max() > 1e-3 and np.abs(rec.meta["gyr_scale"] - 1).max() > 1e-3

    walk = ImuErrors(gyr_noise_density=0, acc_noise_density=0, gyr_bias=0, acc_bias=0, gyr_bias_walk=0.01,
                     acc_bias_walk=0, gyr_scale=0, acc_scale=0)
    rec = synthetic_imu(200.0, 100.0, seed=9, initial="level", initial_rest_s=200.0, errors=walk)
    assert np.all(rec.gyr[0] == 0.0)                            # the walk starts at the constant bias
    for lag_s in (1.0, 10.0):                                    # variance grows linearly with time
        lag = int(lag_s * 100)
        inc = (rec.gyr[lag:] - rec.gyr[:-lag]).astype(np.float64)
        np.testing.assert_allclose(inc.std(), 0.01 * math.sqrt(lag_s), rtol=0.25)


def test_saturation_and_quantisation():
    err = ImuErrors(gyr_range=3.0, acc_range=12.0, gyr_lsb=0.01, acc_lsb=0.05)
    rec = synthetic_imu(20.0, RATE, seed=10, errors=err, rot_intensity=4.0, lin_intensity=6.0)
    assert np.abs(rec.gyr).max() == pytest.approx(3.0) and np.mean(np.abs(rec.gyr) >= 3.0) > 0.01
    assert np.abs(rec.acc).max() == pytest.approx(12.0)
    inside = np.abs(rec.gyr) < 3.0 - 1e-6
    q = rec.gyr[inside].astype(np.float64) / 0.01
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)


def test_random_rests_and_validation():
    rec = synthetic_imu(60.0, 50.0, seed=13, rests=4, rest_duration_s=(2.0, 3.0), initial_rest_s=1.5)
    still = ~rec.scored
    # initial rest plus four rests of 2-3 s (each a little longer in samples, edges included)
    assert 1.5 + 4 * 2.0 - 0.2 <= still.sum() / 50.0 <= 1.5 + 4 * 3.0 + 0.5
    edges = np.flatnonzero(np.diff(still.astype(int)) == 1)
    assert len(edges) == 4
    assert rec.gaps == [] and rec.valid.all()
    with pytest.raises(ValueError, match="do not fit"):
        synthetic_imu(5.0, 50.0, rests=10)
    with pytest.raises(ValueError, match="initial"):
        synthetic_imu(1.0, 50.0, initial="upside-down")
