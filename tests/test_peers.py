"""The PyPI peer filters' adapters (edge/tasks/attitude/peers.py) and the BROAD metric (edge/tasks/attitude/evaluate.py).

On a 20 s slice of BROAD *training* trial 02 (10 s rest, then 10 s of rotation), every installed
peer must give unit quaternions and a sane inclination RMSE: a wrong unit (deg vs rad, g vs m/s²)
or frame (ENU vs NED flip) gives tens of degrees up to 180°. Needs ../shared/data/broad; skipped
without it. Peers not installed are skipped (they are in the `test` extra).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.tasks.attitude import peers
from edge.tasks.attitude.metric import inclination_error_deg, inclination_rmse
from edge.quaternion import quat_multiply as quat_mul
from edge.tasks.attitude.evaluate import broad_trials, evaluate_attitude, format_table, load_trial, resample_trial

BROAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"
TRIAL = BROAD / "02_undisturbed_slow_rotation_B.npz"
need_broad = pytest.mark.skipif(not TRIAL.exists(), reason=f"BROAD data not found at {BROAD}")

BOUND = {"VQF": 2.0}  # degrees on the slice; every other peer: < 10°
DEFAULT_BOUND = 10.0


def _axis_angle(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    h = np.radians(deg) / 2
    return np.concatenate([[np.cos(h)], np.sin(h) * axis])


@pytest.fixture(scope="module")
def slice_():
    """Seconds 30–50 of training trial 02: rest, then movement from 40.1 s (about half scored)."""
    trial = load_trial(TRIAL)
    fs = trial["rate_hz"]
    a, b = int(30 * fs), int(50 * fs)
    out = {k: (v[a:b] if isinstance(v, np.ndarray) else v) for k, v in trial.items()}
    assert 0.3 < out["movement"].mean() < 0.7
    return out


# ---------------------------------------------------------------------------------------------
# the metric, without data


def test_metric_heading_invariant_and_inclination_exact():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # An earth-frame heading offset (about z, applied on the left) costs nothing...
    yaw = np.tile(_axis_angle([0, 0, 1], 73.0), (50, 1))
    assert np.allclose(inclination_error_deg(quat_mul(yaw, q), q), 0, atol=1e-5)
    # ...and sign flips (q ≡ -q) neither; a 7° earth-frame tilt costs exactly 7°.
    assert np.allclose(inclination_error_deg(-q, q), 0, atol=1e-5)
    tilt = np.tile(_axis_angle([1, 1, 0], 7.0), (50, 1))
    assert np.allclose(inclination_error_deg(quat_mul(tilt, q), q), 7.0, atol=1e-6)
    # RMSE skips unscored samples and NaN reference rows.
    ref = q.copy()
    ref[:5] = np.nan
    est = quat_mul(tilt, q)
    est[45:] = quat_mul(np.tile(_axis_angle([0, 1, 0], 90.0), (5, 1)), q[45:])
    scored = np.ones(50, bool)
    scored[45:] = False
    assert inclination_rmse(est, ref, scored) == pytest.approx(7.0, abs=1e-6)


def test_missing_peer_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "imufusion", None)  # makes `import imufusion` fail
    assert not peers.available("imufusion")
    assert peers.missing_message("imufusion") == "imufusion: not installed: pip install imufusion"
    assert "imufusion" not in peers.estimators()
    with pytest.raises(peers.PeerNotInstalled, match="not installed: pip install imufusion"):
        peers.imufusion_estimate(np.zeros((3, 3)), np.zeros((3, 3)), 100.0)
    res = evaluate_attitude({"imufusion": peers.imufusion_estimate},
                            [{"name": "x", "acc": np.tile([0, 0, 9.81], (10, 1)), "gyr": np.zeros((10, 3)),
                              "quat": np.tile([1.0, 0, 0, 0], (10, 1)), "movement": np.ones(10, bool),
                              "rate_hz": 100.0}], progress=False)
    assert "pip install imufusion" in res["estimators"]["imufusion"]["error"]
    assert "pip install imufusion" in format_table(res)


# ---------------------------------------------------------------------------------------------
# on real data


@need_broad
def test_split_is_the_readme_one():
    test, train = broad_trials(BROAD, "test"), broad_trials(BROAD, "train")
    assert [p.name[:2] for p in test] == ["03", "05", "07", "09", "12", "16", "21", "25", "27", "29", "35"]
    assert len(train) == 19 and not {p.name for p in test} & {p.name for p in train}
    assert TRIAL in train


@need_broad
def test_metric_on_reference_is_zero(slice_):
    assert inclination_rmse(slice_["quat"], slice_["quat"], slice_["movement"]) == pytest.approx(0, abs=1e-3)
    # a NaN-free, heading-rotated reference too
    yaw = np.tile(_axis_angle([0, 0, 1], 120.0), (len(slice_["quat"]), 1))
    assert inclination_rmse(quat_mul(yaw, slice_["quat"]), slice_["quat"], slice_["movement"]) < 1e-3


@need_broad
@pytest.mark.parametrize("name", list(peers.PEERS))
def test_peer_on_broad_slice(name, slice_):
    if not peers.available(name):
        pytest.skip(peers.missing_message(name))
    s = slice_
    q = peers.PEERS[name].estimate(s["acc"], s["gyr"], s["rate_hz"])
    assert q.shape == (len(s["acc"]), 4) and q.dtype == np.float64
    assert np.all(np.isfinite(q))
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    err = inclination_rmse(q, s["quat"], s["movement"])
    assert err < BOUND.get(name, DEFAULT_BOUND), f"{name}: {err:.2f}° on the slice — a unit or frame mistake?"


@need_broad
def test_wrong_units_or_frame_would_be_caught(slice_):
    """The bound above separates right from wrong: the traps the adapters avoid score far worse."""
    s = slice_
    if peers.available("imufusion"):  # imufusion fed rad/s and m/s² instead of deg/s and g
        import imufusion
        ahrs = imufusion.Ahrs()
        ahrs.set_settings(imufusion.AhrsSettings(sample_rate=s["rate_hz"], convention=imufusion.CONVENTION_ENU,
                                                 **peers.IMUFUSION_SETTINGS))
        q = np.empty((len(s["acc"]), 4))
        for i in range(len(q)):
            ahrs.update_no_magnetometer(s["gyr"][i], s["acc"][i])
            q[i] = ahrs.get_quaternion()
        assert inclination_rmse(q, s["quat"], s["movement"]) > 3 * DEFAULT_BOUND
    if peers.available("EKF"):  # ahrs 0.4.0 EKF with frame='ENU' is flipped about x
        from ahrs.filters import EKF
        k = int(12 * s["rate_hz"])  # enough: the flip shows from the first sample
        q = EKF(gyr=s["gyr"][:k], acc=s["acc"][:k], frequency=s["rate_hz"], frame="ENU").Q
        assert inclination_rmse(q, s["quat"][:k]) > 90


@need_broad
def test_evaluate_and_resample(slice_):
    s = {**slice_, "name": "02_slice"}
    ests = peers.estimators(["VQF", "BasicVQF"])
    if not ests:
        pytest.skip(peers.missing_message("VQF"))
    ests["reference"] = lambda acc, gyr, fs, _q=s["quat"]: np.nan_to_num(_q, nan=1.0)  # exact on scored rows
    res = evaluate_attitude(ests, [s], progress=False)
    r = res["estimators"]
    assert r["reference"]["mean"] == pytest.approx(0, abs=1e-3)
    assert r["VQF"]["worst_trial"] == "02_slice" and r["VQF"]["us"] > 0
    table = format_table(res)
    assert "VQF" in table and "worst" in table

    for rate in (100.0, 50.0):
        low = resample_trial(s, rate)
        n = len(low["acc"])
        assert low["rate_hz"] == rate and abs(n - 20 * rate) <= 1
        assert low["quat"].shape == (n, 4) and low["movement"].shape == (n,)
        # the resampled reference scores ~0 against itself and stays unit
        ok = ~np.isnan(low["quat"]).any(1)
        assert np.allclose(np.linalg.norm(low["quat"][ok], axis=1), 1)
        res = evaluate_attitude({"VQF": peers.PEERS["VQF"].estimate}, [low], progress=False)
        assert res["rate_hz"] == rate and res["estimators"]["VQF"]["mean"] < 2.0
