"""Recorded streams (edge.io.recordings) and the attitude metric (edge.quaternion): round trips, every
bad-input rule on real garbage files (one RecordingError naming the file and the line, or the
documented drop/gap rule), a real BROAD trial, the BROAD inclination metric, and resampling."""
import gzip
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edge.quaternion import quat_from_axis_angle, quat_from_roll_pitch, quat_multiply, quat_normalize, quat_to_roll_pitch
from edge.tasks.attitude.metric import inclination_error_deg, inclination_rmse
from edge.firmware_sim.imu import synthetic_imu
from edge.io.recordings import IMU_CHANNELS, Recording, RecordingError, RecordingWarning, read_recording, resample, write_recording_csv
from edge.io.datasets import BROAD_TEST_TRIALS, broad_trial_number, broad_trials

BROAD = Path(__file__).resolve().parents[1].parent / "shared/data/broad"
needs_broad = pytest.mark.skipif(not BROAD.is_dir(), reason="BROAD data not available at ../shared/data/broad")

HEADER = "t,acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z"


def rows(n, rate=100.0, g=9.81, t0=0.0):
    """n plausible CSV data lines (a sensor lying flat, rotating slowly about z)."""
    return [f"{t0 + k / rate:.6f},0.01,-0.02,{g},0.001,0.002,0.3" for k in range(n)]


def write(path, lines, newline_at_end=True):
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


def error_of(path, **kw) -> RecordingError:
    with pytest.raises(RecordingError) as info:
        read_recording(path, **kw)
    err = info.value
    assert err.path == str(path) and str(path) in str(err)
    assert "\n" not in str(err)                                   # one line
    return err


# --------------------------------------------------------------------------------- round trips

def test_csv_round_trip_with_reference_mask_and_comment(tmp_path):
    rec = synthetic_imu(3.0, 2000.0 / 7.0, seed=3, rests=[(1.0, 2.0)])
    path = write_recording_csv(rec, tmp_path / "demo.csv", comment="Demo excerpt\nCC BY 4.0: attribution here")
    text = path.read_text().splitlines()
    assert text[0] == "# Demo excerpt" and text[2].startswith("t,acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z,qw,qx,qy,qz")
    back = read_recording(path)
    assert back.channels == list(IMU_CHANNELS) and back.units == rec.units
    assert len(back) == len(rec) and back.rate_hz == pytest.approx(rec.rate_hz, rel=1e-6)
    np.testing.assert_allclose(back.t, rec.t, atol=1e-9)
    assert np.array_equal(back.x, rec.x)                          # %.9g round-trips float32 exactly
    np.testing.assert_allclose(back.reference, rec.reference, atol=1e-8)
    assert np.array_equal(back.scored, rec.scored)
    assert back.gaps == [] and back.warnings == []


def test_csv_gz_round_trip_and_extra_channels_kept(tmp_path):
    lines = ["acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z,temp"] + [f"0,0,9.8,0.1,0,0,{20 + k}" for k in range(5)]
    src = write(tmp_path / "extra.csv", lines)
    rec = read_recording(src, rate_hz=50.0)
    assert rec.channels == list(IMU_CHANNELS) + ["temp"] and rec.units[-1] == ""
    np.testing.assert_allclose(rec.columns(["temp"])[:, 0], [20, 21, 22, 23, 24])
    np.testing.assert_allclose(rec.t, np.arange(5) / 50.0)
    out = write_recording_csv(rec, tmp_path / "extra.csv.gz")
    assert gzip.decompress(out.read_bytes()).startswith(b"t,acc_x")
    back = read_recording(out)
    assert back.channels == rec.channels and np.array_equal(back.x, rec.x)


def test_units_are_converted_in_csv_and_json_lines(tmp_path):
    lines = ["gyr_x,gyr_y,gyr_z,acc_x,acc_y,acc_z"] + ["180,0,-90,0,0,1"] * 3      # deg/s and g, any order
    rec = read_recording(write(tmp_path / "g.csv", lines), acc_unit="g", gyr_unit="deg/s", rate_hz=10)
    np.testing.assert_allclose(rec.acc[0], [0, 0, 9.80665], rtol=1e-6)
    np.testing.assert_allclose(rec.gyr[0], [math.pi, 0, -math.pi / 2], rtol=1e-6)
    objs = [{"t": k * 0.01, "acc": [0, 0, 1.0], "gyr": [0, 90, 0], "quat": [1, 0, 0, 0], "movement": k > 0}
            for k in range(4)]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    rec = read_recording(path, acc_unit="g", gyr_unit="deg/s")
    assert rec.rate_hz == pytest.approx(100.0)
    np.testing.assert_allclose(rec.gyr[:, 1], math.pi / 2, rtol=1e-6)
    assert rec.reference.shape == (4, 4) and rec.scored.tolist() == [False, True, True, True]


def test_npz_with_broad_keys(tmp_path):
    n = 50
    acc = np.tile([0, 0, 9.81], (n, 1)).astype(np.float32)
    quat = np.tile([1.0, 0, 0, 0], (n, 1)).astype(np.float32)
    quat[10:15] = np.nan
    np.savez(tmp_path / "t.npz", acc=acc, gyr=np.zeros((n, 3), np.float32), quat=quat,
             movement=np.arange(n) > 5, sampling_rate=np.float64(200.0))
    rec = read_recording(tmp_path / "t.npz")
    assert len(rec) == n and rec.rate_hz == 200.0 and rec.scored.sum() == n - 6
    assert np.isnan(rec.reference[10:15]).all() and rec.valid.all()           # occlusion is fine
    np.savez(tmp_path / "bad.npz", acc=acc)
    assert "missing key(s): gyr" in error_of(tmp_path / "bad.npz").reason
    np.savez(tmp_path / "norate.npz", acc=acc, gyr=np.zeros((n, 3)))
    assert "rate_hz" in error_of(tmp_path / "norate.npz").reason
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    assert "not a readable .npz" in error_of(tmp_path / "junk.npz").reason


# ------------------------------------------------------------------------------ bad input rules

def test_missing_columns_are_listed_with_the_header_line(tmp_path):
    path = write(tmp_path / "m.csv", ["# recorded on the bench", "t,acc_x,acc_z,gyr_x,gyr_y"] + ["0,0,9.8,0,0"] * 3)
    err = error_of(path)
    assert err.line == 2 and "missing column(s): acc_y, gyr_z" in err.reason
    path = write(tmp_path / "noheader.csv", rows(3))
    assert error_of(path).line == 1 and "header" in error_of(path).reason
    path = write(tmp_path / "ref.csv", [HEADER + ",qw,qx,qy"] + [r + ",1,0,0" for r in rows(3)])
    assert "missing qz" in error_of(path).reason


def test_text_in_a_number_cell_names_line_and_column(tmp_path):
    lines = [HEADER] + rows(10)
    lines[7] = lines[7].replace("-0.02", "n/a")                   # file line 8
    err = error_of(write(tmp_path / "text.csv", lines))
    assert err.line == 8 and "acc_y" in err.reason and "'n/a'" in err.reason
    # empty cells read as NaN instead (a missing value, not garbage)
    lines[7] = lines[7].replace("n/a", "")
    with pytest.warns(RecordingWarning, match=r"1 sample\(s\) with NaN/Inf .* not fed \(first at line 8\)"):
        rec = read_recording(write(tmp_path / "empty.csv", lines))
    assert not rec.valid[6] and rec.valid.sum() == 9


def test_acc_in_g_without_the_flag_and_the_reverse(tmp_path):
    path = write(tmp_path / "g.csv", ["# header next", HEADER] + rows(200, g=1.0))
    err = error_of(path)
    assert err.line == 3 and "--acc-unit g" in err.reason and "1" in err.reason
    rec = read_recording(path, acc_unit="g")
    assert np.median(np.linalg.norm(rec.acc, axis=1)) == pytest.approx(9.80665, rel=1e-3)
    ms2 = write(tmp_path / "ms2.csv", [HEADER] + rows(200))
    assert "drop --acc-unit g" in error_of(ms2, acc_unit="g").reason
    assert read_recording(ms2, acc_unit="g", check_units=False).acc[0, 2] == pytest.approx(9.81 * 9.80665, rel=1e-6)
    deg = write(tmp_path / "deg.csv", [HEADER] + [f"{k / 100:.2f},0,0,9.81,120,-80,200" for k in range(50)])
    assert "--gyr-unit deg/s" in error_of(deg).reason


def test_time_going_backwards_or_repeating_names_the_line(tmp_path):
    lines = [HEADER] + rows(20)
    lines[13] = lines[13].replace(lines[13].split(",")[0], "0.050000", 1)    # file line 14: back to 0.05 s
    err = error_of(write(tmp_path / "back.csv", lines))
    assert err.line == 14 and "goes backwards" in err.reason and "line 13" in err.reason
    lines = [HEADER] + rows(20)
    lines[5] = lines[4]                                                     # line 6 repeats line 5's t
    err = error_of(write(tmp_path / "rep.csv", lines))
    assert err.line == 6 and "repeats" in err.reason
    lines = [HEADER] + rows(20)
    lines[9] = "nan" + lines[9][len("0.080000"):]
    assert error_of(write(tmp_path / "nan_t.csv", lines)).line == 10


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path):
    lines = [HEADER] + rows(30)
    lines[-1] = lines[-1][:12]                                    # "0.290000,0.0": 2 of 7 fields
    path = write(tmp_path / "trunc.csv", lines, newline_at_end=False)
    with pytest.warns(RecordingWarning, match="line 31: truncated last line"):
        rec = read_recording(path)
    assert len(rec) == 29 and any("line 31" in w for w in rec.warnings)
    # cut in the middle of a number (no newline at the end): also the last line only
    lines = [HEADER] + rows(30)
    lines[-1] = lines[-1][:-2] + "e"                              # "...,0.001,0.002,0e"
    with pytest.warns(RecordingWarning, match="truncated last line"):
        assert len(read_recording(write(tmp_path / "cut.csv", lines, newline_at_end=False))) == 29
    # the same defect anywhere else is an error with its line
    lines = [HEADER] + rows(30)
    lines[10] = lines[10][:12]
    err = error_of(write(tmp_path / "short.csv", lines))
    assert err.line == 11 and "2 fields" in err.reason
    # JSON lines: an incomplete last object is dropped, a broken line elsewhere is an error
    objs = [json.dumps({"t": k / 100, "acc": [0, 0, 9.81], "gyr": [0, 0, 0]}) for k in range(10)]
    path = tmp_path / "trunc.jsonl"
    path.write_text("\n".join(objs[:-1] + [objs[-1][:20]]))
    with pytest.warns(RecordingWarning, match="line 10: truncated last line"):
        assert len(read_recording(path)) == 9
    path.write_text("\n".join(objs[:4] + ['{"t": 0.04, "acc": [0, 0'] + objs[5:]) + "\n")
    assert error_of(path).line == 5
    path.write_text("\n".join(objs[:3] + ['{"t": 0.03, "acc": [0, 0], "gyr": [0, 0, 0]}'] + objs[4:]))
    err = error_of(path)
    assert err.line == 4 and "'acc'" in err.reason


def test_nan_runs_and_time_jumps_become_gaps(tmp_path):
    lines = [HEADER] + rows(500)                                  # 100 Hz, 5 s
    for k in range(100, 103):                                     # a short NaN run: skipped, not a gap
        lines[1 + k] = lines[1 + k].replace("0.001", "nan")
    for k in range(200, 300):                                     # 1 s of NaN: a gap
        lines[1 + k] = lines[1 + k].replace("0.01,", "nan,")
    lines[1 + 400:] = rows(100, t0=5.0)                           # t jumps 0.99 -> 5.0 s before sample 400
    with pytest.warns(RecordingWarning, match="gap"):
        rec = read_recording(write(tmp_path / "gaps.csv", lines))
    assert rec.gaps == [(200, 300), (400, 400)]
    assert not rec.valid[100:103].any() and not rec.valid[200:300].any() and rec.valid.sum() == 500 - 103
    assert any("lines 202-301" in w and "resets at line 302" in w for w in rec.warnings)
    assert any("t jumps by 1.01 s before line 402" in w for w in rec.warnings)
    # a shorter threshold turns the short run into a gap too
    with pytest.warns(RecordingWarning):
        rec = read_recording(tmp_path / "gaps.csv", gap_s=0.02)
    assert (100, 103) in rec.gaps


def test_gaps_at_the_edges_and_npz_errors_by_sample(tmp_path):
    acc = np.tile([0, 0, 9.81], (300, 1))
    acc[:80] = np.nan                                              # 0.8 s unusable at the start
    acc[260:] = np.inf                                             # and 0.4 s at the end
    np.savez(tmp_path / "edges.npz", acc=acc, gyr=np.zeros((300, 3)), sampling_rate=100.0)
    with pytest.warns(RecordingWarning):
        rec = read_recording(tmp_path / "edges.npz")
    assert rec.gaps == [(0, 80)]                                   # 0.4 s at the end is shorter than 0.5 s
    with pytest.warns(RecordingWarning):
        assert read_recording(tmp_path / "edges.npz", gap_s=0.3).gaps == [(0, 80), (260, 300)]
    t = np.arange(300) / 100.0
    t[123] = t[120]
    np.savez(tmp_path / "t.npz", acc=np.tile([0, 0, 9.81], (300, 1)), gyr=np.zeros((300, 3)), t=t)
    err = error_of(tmp_path / "t.npz")
    assert err.line is None and "sample 123: t goes backwards" in err.reason
    np.savez(tmp_path / "g.npz", acc=np.tile([0, 0, 1.0], (300, 1)), gyr=np.zeros((300, 3)), t=np.arange(300) / 100)
    assert "--acc-unit g" in error_of(tmp_path / "g.npz").reason
    np.savez(tmp_path / "len.npz", acc=np.zeros((300, 3)), gyr=np.zeros((299, 3)), sampling_rate=100.0)
    assert "differ in length" in error_of(tmp_path / "len.npz").reason


def test_other_bad_files_give_one_clear_line(tmp_path):
    assert "no such file" in error_of(tmp_path / "absent.csv").reason
    assert "unknown recording format" in error_of(write(tmp_path / "x.xlsx", ["a"])).reason
    assert "empty" in error_of(write(tmp_path / "e.csv", [""])).reason
    assert "header only" in error_of(write(tmp_path / "h.csv", [HEADER])).reason
    assert "rate_hz" in error_of(write(tmp_path / "r.csv", [HEADER[2:]] + ["0,0,9.8,0,0,0"] * 3)).reason
    dup = write(tmp_path / "d.csv", [HEADER + ",acc_x"] + [r + ",1" for r in rows(3)])
    assert "duplicate" in error_of(dup).reason
    (tmp_path / "bin.csv").write_bytes(HEADER.encode() + b"\n0,0,0,9.8,0,0,0\n\xff\xfe\x00garbage\n")
    err = error_of(tmp_path / "bin.csv")
    assert err.line == 3 and "UTF-8" in err.reason
    long = write(tmp_path / "l.csv", [HEADER] + rows(5)[:2] + [rows(5)[2] + ",7"] + rows(5)[3:])
    assert error_of(long).line == 4


def test_recording_modules_do_not_import_torch():
    code = ("import sys; import edge.io.recordings, edge.quaternion, edge.firmware_sim.imu; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ BROAD

@needs_broad
def test_reading_a_real_broad_trial():
    path = BROAD / "01_undisturbed_slow_rotation_A.npz"
    samples = {t["trial"]: t["samples"] for t in json.loads((BROAD / "trials.json").read_text())}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # a clean trial reads without warnings
        rec = read_recording(path)
    assert len(rec) == samples["01_undisturbed_slow_rotation_A"] == 56940
    assert rec.rate_hz == pytest.approx(285.714, abs=1e-3)
    assert np.median(np.linalg.norm(rec.acc, axis=1)) == pytest.approx(9.8, abs=0.15)
    assert rec.channels[:6] == list(IMU_CHANNELS) and rec.channels[6:] == ["mag_x", "mag_y", "mag_z"]
    assert rec.reference.shape == (56940, 4) and rec.scored.dtype == bool
    assert np.isnan(rec.reference[:, 0]).sum() == 162 and rec.valid.all() and rec.gaps == []
    # the data's frame convention is ours: at rest, acc = R(q)ᵀ·(0, 0, g)
    rest = ~rec.scored & np.isfinite(rec.reference[:, 0])
    up = quat_multiply(quat_multiply(rec.reference[rest] * [1, -1, -1, -1], [0, 0, 0, 1.0]), rec.reference[rest])
    a = rec.acc[rest] / np.linalg.norm(rec.acc[rest], axis=1, keepdims=True)
    assert np.median(np.degrees(np.arccos(np.clip(np.sum(up[:, 1:] * a, axis=1), -1, 1)))) < 1.0


@needs_broad
def test_broad_excerpt_round_trips_through_csv(tmp_path):
    rec = read_recording(BROAD / "02_undisturbed_slow_rotation_B.npz")
    a, b = 10_000, 10_000 + 60 * 286                               # about a minute, like the demo recording
    part = Recording(t=rec.t[a:b] - rec.t[a], channels=rec.channels, x=rec.x[a:b], units=rec.units,
                     rate_hz=rec.rate_hz, source=rec.source, reference=rec.reference[a:b], scored=rec.scored[a:b])
    back = read_recording(write_recording_csv(part, tmp_path / "demo.csv", comment="BROAD trial 02, CC BY 4.0"))
    assert back.channels == rec.channels and back.units == rec.units       # mag keeps its µT
    assert np.array_equal(back.x, part.x) and back.rate_hz == pytest.approx(rec.rate_hz, rel=1e-6)
    ok = np.isfinite(part.reference[:, 0])
    assert np.array_equal(ok, np.isfinite(back.reference[:, 0]))          # occlusion rows stay NaN
    np.testing.assert_allclose(back.reference[ok], part.reference[ok], atol=1e-8)


@needs_broad
def test_broad_split():
    test, train, every = broad_trials(BROAD, "test"), broad_trials(BROAD, "train"), broad_trials(BROAD, "all")
    assert [broad_trial_number(p) for p in test] == sorted(BROAD_TEST_TRIALS)
    assert len(test) == 11 and len(train) == 19 and len(every) == 30
    assert not set(test) & set(train) and set(test) | set(train) == set(every)
    with pytest.raises(ValueError, match="split"):
        broad_trials(BROAD, "validation")


# ------------------------------------------------------------------------------------- metric

def random_quats(n, seed=0):
    return quat_normalize(np.random.default_rng(seed).standard_normal((n, 4)))


def test_inclination_error_of_a_known_tilt_and_of_any_heading():
    q = random_quats(200)
    tilt5 = quat_from_axis_angle([1.0, 0.0, 0.0], math.radians(5.0))
    np.testing.assert_allclose(inclination_error_deg(quat_multiply(tilt5, q), q), 5.0, atol=1e-6)
    for yaw in (0.1, 37.0, 90.0, 180.0, -123.0):
        qz = quat_from_axis_angle([0.0, 0.0, 1.0], math.radians(yaw))
        assert inclination_error_deg(quat_multiply(qz, q), q).max() < 1e-5
        # heading on top of the tilt changes nothing either; nor does the quaternion's sign
        both = -quat_multiply(qz, quat_multiply(tilt5, q))
        np.testing.assert_allclose(inclination_error_deg(both, q), 5.0, atol=1e-6)
    tilt = quat_from_axis_angle([1.0, -2.0, 0.0], math.radians(30.0))       # any horizontal axis
    np.testing.assert_allclose(inclination_error_deg(quat_multiply(tilt, q), q), 30.0, atol=1e-6)


def test_inclination_rmse_skips_occlusion_and_counts_only_scored_rows():
    q = random_quats(100, seed=1)
    est = quat_multiply(quat_from_axis_angle([0, 1.0, 0], math.radians(2.0)), q)
    est[:50] = quat_multiply(quat_from_axis_angle([1.0, 0, 0], math.radians(10.0)), q[:50])
    ref = q.copy()
    ref[60:70] = np.nan
    scored = np.arange(100) >= 50
    assert inclination_rmse(est, ref, scored) == pytest.approx(2.0, abs=1e-6)
    assert inclination_rmse(est, ref) == pytest.approx(math.sqrt((50 * 100 + 40 * 4) / 90), abs=1e-6)
    est[80] = np.nan
    assert math.isnan(inclination_rmse(est, ref, scored))                  # a broken estimate is not hidden
    assert inclination_rmse(est, ref, scored, skip_nan_estimate=True) == pytest.approx(2.0, abs=1e-6)
    assert math.isnan(inclination_rmse(est, ref, np.zeros(100, bool)))


def test_roll_pitch_round_trip():
    roll, pitch, yaw = np.array([10.0, -170.0, 45.0]), np.array([5.0, -60.0, 89.0]), np.array([0.0, 30.0, -100.0])
    r, p = quat_to_roll_pitch(quat_from_roll_pitch(roll, pitch, yaw))
    np.testing.assert_allclose(r, roll, atol=1e-6)
    np.testing.assert_allclose(p, pitch, atol=1e-6)


# ---------------------------------------------------------------------------------- resampling

def sine_recording(rate, seconds=10.0, f=1.0):
    t = np.arange(int(round(seconds * rate)) + 1) / rate
    s = np.sin(2 * np.pi * f * t)
    acc = np.stack([s, np.cos(2 * np.pi * f * t), 9.81 + 0 * t], axis=1)
    gyr = np.stack([0 * t, 0 * t, 0.5 + 0 * t], axis=1)                   # constant rate about z
    ref = quat_from_axis_angle([0, 0, 1.0], 0.5 * t)
    return Recording.from_imu(acc, gyr, rate_hz=rate, reference=ref, scored=t > 2.0)


def test_resample_halves_the_length_and_keeps_the_sinusoid():
    rec = sine_recording(200.0)
    half = resample(rec, 100.0)
    assert len(rec) == 2001 and len(half) == 1001 and half.rate_hz == 100.0
    np.testing.assert_allclose(half.t, np.arange(1001) / 100.0, atol=1e-12)
    np.testing.assert_allclose(half.acc[:, 0], np.sin(2 * np.pi * half.t), atol=1e-6)   # on the old samples
    odd = resample(rec, 70.0)                                                           # between them
    assert len(odd) == 701
    bound = (2 * np.pi / 200.0) ** 2 / 8 + 1e-6                                          # linear interpolation
    np.testing.assert_allclose(odd.acc[:, 0], np.sin(2 * np.pi * odd.t), atol=bound)
    np.testing.assert_allclose(odd.acc[:, 1], np.cos(2 * np.pi * odd.t), atol=bound)
    # slerp is exact for a constant-rate rotation
    exact = quat_from_axis_angle([0, 0, 1.0], 0.5 * odd.t)
    assert np.abs(np.abs(np.sum(odd.reference * exact, axis=1)) - 1).max() < 1e-9
    assert np.array_equal(odd.scored, odd.t > 2.0 - 0.5 / 200.0) or abs(odd.scored.sum() - (odd.t > 2.0).sum()) <= 1
    up = resample(rec, 400.0)
    assert len(up) == 4001
    np.testing.assert_allclose(up.acc[:, 0], np.sin(2 * np.pi * up.t), atol=(2 * np.pi / 200.0) ** 2 / 8 + 1e-6)


def test_resample_does_not_bridge_gaps(tmp_path):
    lines = [HEADER] + rows(300) + rows(300, t0=5.0)              # 0..2.99 s, then 5..7.99 s
    with pytest.warns(RecordingWarning):
        rec = read_recording(write(tmp_path / "jump.csv", lines))
    assert rec.gaps == [(300, 300)]
    out = resample(rec, 50.0)
    inside = (out.t > 2.99) & (out.t < 5.0)
    assert inside.sum() > 90 and not out.valid[inside].any() and out.valid[~inside].all()
    assert len(out.gaps) == 1 and out.t[out.gaps[0][1]] == pytest.approx(5.0)


# ------------------------------------------------------------------------------ other sensors

ETT = Path(__file__).resolve().parents[1].parent / "shared/data/ett/ETTh1.csv"
POWER = ["hufl", "ot"]


def test_other_channels_from_csv_with_iso_dates_jsonl_and_npz(tmp_path):
    values = np.array([[5.827, 30.531], [5.693, 27.787], [np.nan, 27.787], [5.157, 25.044]])
    stamps = ["2016-07-01 00:00:00", "2016-07-01 01:00:00", "2016-07-01 02:00:00", "2016-07-01 03:00:00"]
    lines = ["date,HUFL,extra,OT"] + [f"{d},{'' if np.isnan(a) else a},1,{b}" for d, (a, b) in zip(stamps, values)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        csv = read_recording(write(tmp_path / "p.csv", lines), channels=["HUFL", "OT"])
    epoch = (np.datetime64("2016-07-01T00:00:00") - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "s")
    np.testing.assert_array_equal(csv.t, epoch + 3600.0 * np.arange(4))
    assert csv.rate_hz == pytest.approx(1 / 3600) and csv.channels == ["hufl", "ot", "extra"]
    np.testing.assert_array_equal(csv.columns(POWER), values.astype(np.float32))
    assert csv.valid.tolist() == [True, True, False, True]
    assert csv.gaps == []            # an hour between samples is the rate, not a gap (5 periods are)

    objs = [{"t": float(k), "HUFL": None if np.isnan(a) else a, "OT": b} for k, (a, b) in enumerate(values)]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(o) for o in objs) + "\n")
    np.savez(tmp_path / "p.npz", hufl=values[:, 0], ot=values[:, 1], sampling_rate=1.0)
    for name in ("p.jsonl", "p.npz"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecordingWarning)
            rec = read_recording(tmp_path / name, channels=POWER)
        np.testing.assert_array_equal(rec.columns(POWER), values.astype(np.float32))
        assert rec.rate_hz == 1.0 and rec.valid.tolist() == [True, True, False, True]


def test_other_channels_bad_input_names_file_and_line(tmp_path):
    head = "date,HUFL,OT"
    err = error_of(write(tmp_path / "d.csv", [head, "2016-07-01 00:00:00,1,2", "yesterday,1,2"]), channels=POWER)
    assert err.line == 3 and "yesterday" in str(err) and "ISO date-time" in str(err)
    err = error_of(write(tmp_path / "m.csv", [head, "2016-07-01 00:00:00,1,2"]), channels=["hufl", "lull"])
    assert "missing column(s): lull" in str(err)
    err = error_of(write(tmp_path / "c.csv", [head, "2016-07-01 00:00:00,1,2", "2016-07-01 01:00:00,x,2"]),
                   channels=POWER)
    assert err.line == 3 and "'x' is not a number" in str(err)
    (tmp_path / "j.jsonl").write_text('{"hufl": 1, "ot": 2}\n{"hufl": "1", "ot": 2}\n')
    err = error_of(tmp_path / "j.jsonl", channels=POWER, rate_hz=1.0)
    assert err.line == 2 and "'hufl'" in str(err)
    np.savez(tmp_path / "n.npz", hufl=np.ones((3, 2)), ot=np.ones(3))
    assert "1-D numeric array" in str(error_of(tmp_path / "n.npz", channels=POWER, rate_hz=1.0))


@pytest.mark.skipif(not ETT.is_file(), reason="ETT data not available at ../shared/data/ett")
def test_real_ett_file_reads_hourly_without_gaps():
    names = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    rec = read_recording(ETT, channels=names)
    first = ETT.read_text().splitlines()[1].split(",")
    assert len(rec) == 17420 and rec.gaps == [] and rec.rate_hz == pytest.approx(1 / 3600)
    np.testing.assert_allclose(rec.columns([n.lower() for n in names])[0], [float(v) for v in first[1:]], rtol=1e-6)
