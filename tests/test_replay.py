"""`edge replay`: one output row per input sample, equal to running the engine by hand; the summary's
metric equals the metric recomputed from the output file; resampling maps back without look-ahead;
bad recordings are one line and exit code 2, or replayed by the documented NaN/gap rules."""
import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edge
from edge.quaternion import quat_to_roll_pitch
from edge.tasks.attitude.metric import inclination_rmse
from edge.cli import main
from edge.export import export_bundle
from edge.models import GRU, QuaternionHead, Stack
from edge.io.recordings import read_recording, resample, write_recording_csv

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "imu-demo.csv"
IMU = ["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"]
COLUMNS = ["t", "qw", "qx", "qy", "qz", "roll_deg", "pitch_deg", "held"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("replay") / "tiny-attitude.onnx"
    export_bundle(Stack(GRU(6, 16), QuaternionHead(16)).eval(), path, input_size=6, task="attitude",
                  inputs=IMU, outputs=["qw", "qx", "qy", "qz"], sample_rate_hz=285.714, parity_steps=50)
    return path


@pytest.fixture(scope="module")
def pressure_bundle(tmp_path_factory):
    """A non-attitude bundle that reads a channel IMU files do not have."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("replay") / "pressure.onnx"
    export_bundle(Stack(GRU(4, 3)).eval(), path, input_size=4, task="sequence",
                  inputs=["gyr_x", "gyr_y", "gyr_z", "pressure"], outputs=["h0", "h1", "h2"], parity_steps=20)
    return path


def replay(*args):
    """Run `edge replay` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["replay", *map(str, args), "--no-progress"])
    return rc, out.getvalue(), err.getvalue()


def read_csv(path):
    with open(path) as f:
        header = f.readline().strip().split(",")
    return header, np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def engine_outputs(bundle_path, x, engine="numba"):
    """The model run by hand over x [T, C] from a fresh state, in one block call."""
    model = edge.load(bundle_path, engine=engine)
    return model.block(np.ascontiguousarray(x, np.float32)[:, None, :], model.init_state(1))[:, 0, :].copy()


@pytest.fixture(scope="module")
def demo_run(bundle, tmp_path_factory):
    """The demo replayed once with every output: (summary, csv path, png path)."""
    d = tmp_path_factory.mktemp("demo")
    out, png = d / "q.csv", d / "demo.png"
    rc, stdout, stderr = replay(DEMO, "--model", bundle, "--output", out, "--plot", png, "--json", "--chunk", 1000)
    assert rc == 0, stderr
    return json.loads(stdout), out, png


def small_csv(tmp_path, n=2000, name="small.csv", edit=None):
    """The first n samples of the demo as a CSV without the comment header; ``edit(rows)`` may change
    the data lines (lists of cells) in place. Data row k is on line k + 2."""
    lines = [s for s in DEMO.read_text().splitlines() if s and not s.startswith("#")]
    header, rows = lines[0], [s.split(",") for s in lines[1:n + 1]]
    if edit:
        edit(rows)
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


# ----------------------------------------------------------------------------------- the demo

def test_demo_recording_is_a_minute_of_a_training_trial_with_attribution():
    assert DEMO.stat().st_size < 2.5e6
    head = DEMO.read_text()[:3000]
    for needle in ("BROAD", "Laidig", "Seel", "10.3390/data6070072", "CC BY 4.0", "08_undisturbed",
                   "rounded to 6 significant digits"):
        assert needle in head
    assert "CC BY 4.0" in (ROOT / "examples" / "IMU-DEMO-ATTRIBUTION.md").read_text()
    rec = read_recording(DEMO)
    assert 55 <= rec.duration_s <= 65 and rec.gaps == [] and rec.warnings == []
    assert rec.reference is not None and rec.scored is not None and rec.scored.mean() > 0.5
    assert np.abs(rec.gyr[~rec.scored]).max() < np.abs(rec.gyr[rec.scored]).max()   # the cut has motion


def test_one_row_per_input_sample_with_unit_quaternions(demo_run):
    summary, out, _ = demo_run
    header, table = read_csv(out)
    rec = read_recording(DEMO)
    assert header == COLUMNS
    assert summary["columns"] == COLUMNS
    assert len(table) == len(rec) == summary["samples"]
    np.testing.assert_allclose(table[:, 0], rec.t, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(table[:, 1:5], axis=1), 1.0, atol=1e-5)
    assert not table[:, 7].any()                                 # nothing held: every sample fed
    roll, pitch = quat_to_roll_pitch(table[:, 1:5])
    np.testing.assert_allclose(table[:, 5], roll, atol=1e-4)
    np.testing.assert_allclose(table[:, 6], pitch, atol=1e-4)


def test_output_equals_the_engine_run_by_hand(bundle, demo_run):
    _, out, _ = demo_run                        # replayed in chunks of 1000; by hand in one block call
    rec = read_recording(DEMO)
    expected = engine_outputs(bundle, rec.columns(IMU))
    _, table = read_csv(out)
    np.testing.assert_allclose(table[:, 1:5], expected, rtol=0, atol=1e-6)


def test_summary_rmse_equals_the_metric_recomputed_from_the_output_file(demo_run):
    summary, out, _ = demo_run
    rec = read_recording(DEMO)
    _, table = read_csv(out)
    rmse = inclination_rmse(table[:, 1:5], rec.reference, rec.scored)
    assert math.isfinite(rmse)
    assert summary["inclination_rmse_deg"] == pytest.approx(rmse, rel=1e-9)
    assert summary["scored_samples"] == int((rec.scored & np.isfinite(rec.reference).all(1)).sum())
    assert summary["engine"] == "numba" and "kernel" in summary["engine_reason"]
    assert summary["resampled"] is False and summary["gaps"] == 0 and summary["held_samples"] == 0
    assert summary["duration_s"] == pytest.approx(rec.duration_s)
    assert summary["us_per_sample"] == pytest.approx(summary["engine_s"] / len(rec) * 1e6)
    assert summary["realtime_factor"] == pytest.approx(rec.duration_s / summary["engine_s"])
    assert summary["engine_s"] <= summary["replay_s"] <= summary["wall_s"]
    assert summary["engine_calls"] == math.ceil(len(rec) / 1000)


def test_text_summary_names_what_the_issue_asks_for(bundle):
    rc, out, _ = replay(DEMO, "--model", bundle)
    assert rc == 0
    for needle in ("17,143 samples", "60.0 s", "on numba", "kernel for every op", "resampling  none",
                   "µs per sample", "real-time factor", "inclination RMSE", "BROAD metric", "wall"):
        assert needle in out, needle


def test_plot_is_a_png(demo_run):
    _, _, png = demo_run
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


# ------------------------------------------------------------------------------- resampling

def test_100hz_copy_is_resampled_and_mapped_back_to_every_input_sample(bundle, tmp_path):
    src = tmp_path / "demo-100hz.csv"
    write_recording_csv(resample(read_recording(DEMO), 100.0), src)
    rec = read_recording(src)
    out = tmp_path / "q100.csv"
    rc, stdout, stderr = replay(src, "--model", bundle, "--output", out, "--json")
    assert rc == 0, stderr
    summary = json.loads(stdout)
    assert summary["resampled"] and summary["resampling"]["to_hz"] == pytest.approx(285.714)
    header, table = read_csv(out)
    assert header == COLUMNS and len(table) == len(rec)
    np.testing.assert_allclose(table[:, 0], rec.t, atol=1e-6)
    assert np.isfinite(table[:, 1:7]).all()

    # by hand: the bundle's grid, the model over it, the latest model sample at or before each input time
    grid = resample(rec, 285.714)
    y = engine_outputs(bundle, grid.columns(IMU))
    j = np.searchsorted(grid.t, rec.t, side="right") - 1
    assert (grid.t[j] <= rec.t + 1e-12).all()                      # no look-ahead
    assert (rec.t - grid.t[j] < 1 / 285.714 + 1e-9).all()          # ... and the latest one
    np.testing.assert_allclose(table[:, 1:5], y[j], atol=1e-6)
    assert summary["inclination_rmse_deg"] == pytest.approx(
        inclination_rmse(table[:, 1:5], rec.reference, rec.scored), rel=1e-9)


# -------------------------------------------------------------------------- bad recordings

def test_missing_column_is_one_line_naming_it(bundle, tmp_path):
    src = small_csv(tmp_path, edit=lambda rows: [r.pop(6) for r in rows])    # drop gyr_z's cells ...
    text = src.read_text().replace("gyr_z,", "", 1)                         # ... and its header name
    src.write_text(text)
    rc, out, err = replay(src, "--model", bundle)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "line 1" in err and "gyr_z" in err and "missing" in err


def test_non_monotonic_t_names_the_line(bundle, tmp_path):
    def back(rows):
        rows[100][0] = rows[98][0]
    rc, out, err = replay(small_csv(tmp_path, edit=back), "--model", bundle)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "line 102" in err and "t goes backwards" in err


def test_wrong_units_are_one_line_with_the_flag_to_use(bundle, tmp_path):
    def in_g(rows):
        for r in rows:
            r[1:4] = [f"{float(v) / 9.80665:.6g}" for v in r[1:4]]
    src = small_csv(tmp_path, edit=in_g)
    rc, _, err = replay(src, "--model", bundle)
    assert rc == 2 and err.count("\n") == 1 and "--acc-unit g" in err
    rc, _, err = replay(src, "--model", bundle, "--acc-unit", "g")
    assert rc == 0, err


def test_truncated_last_line_is_dropped_by_the_rule(bundle, tmp_path):
    src = small_csv(tmp_path, n=500)
    text = src.read_text().rstrip("\n")
    src.write_text(text[:text.rindex(",", 0, len(text) - 40)])               # cut the last line mid-row
    out = tmp_path / "q.csv"
    rc, _, err = replay(src, "--model", bundle, "--output", out)
    assert rc == 0
    assert "line 501" in err and "truncated last line" in err and "Traceback" not in err
    assert len(read_csv(out)[1]) == 499


def test_short_nan_run_is_skipped_with_the_state_held(bundle, tmp_path):
    k, m = 1200, 40                                       # 40 samples = 0.14 s < the 0.5 s gap threshold
    def nan_run(rows):
        for r in rows[k:k + m]:
            r[1:7] = ["nan"] * 6
    src = small_csv(tmp_path, edit=nan_run)
    out = tmp_path / "q.csv"
    rc, stdout, err = replay(src, "--model", bundle, "--output", out, "--json")
    assert rc == 0, err
    s = json.loads(stdout)
    assert s["gaps"] == 0 and s["resets"] == 0 and s["held_samples"] == m and s["fed_samples"] == 2000 - m
    _, table = read_csv(out)
    held = table[:, 7].astype(bool)
    assert held.sum() == m and held[k:k + m].all()
    np.testing.assert_array_equal(table[k:k + m, 1:5], np.repeat(table[k - 1:k, 1:5], m, axis=0))
    x = read_recording(small_csv(tmp_path, name="clean.csv")).columns(IMU)
    expected = engine_outputs(bundle, np.delete(x, np.s_[k:k + m], axis=0))   # the state carried across
    np.testing.assert_allclose(table[~held, 1:5], expected, atol=1e-6)


def test_long_nan_run_is_a_gap_and_resets_the_state(bundle, tmp_path):
    k, m = 800, 300                                       # 300 samples = 1.05 s > 0.5 s: a gap
    def nan_run(rows):
        for r in rows[k:k + m]:
            r[4:7] = ["", "", ""]                         # empty gyro cells read as NaN
    out = tmp_path / "q.csv"
    rc, stdout, err = replay(small_csv(tmp_path, edit=nan_run), "--model", bundle, "--output", out, "--json")
    assert rc == 0, err
    assert "state resets at line" in err
    s = json.loads(stdout)
    assert s["gaps"] == 1 and s["resets"] == 1 and s["held_samples"] == m
    _, table = read_csv(out)
    x = read_recording(small_csv(tmp_path, name="clean.csv")).columns(IMU)
    np.testing.assert_allclose(table[:k, 1:5], engine_outputs(bundle, x[:k]), atol=1e-6)
    np.testing.assert_allclose(table[k + m:, 1:5], engine_outputs(bundle, x[k + m:]), atol=1e-6)   # fresh state
    assert table[k:k + m, 7].all()


def test_leading_nan_rows_are_null_in_json_lines(bundle, tmp_path):
    def lead(rows):
        for r in rows[:5]:
            r[1] = "nan"
    out = tmp_path / "q.jsonl"
    rc, _, err = replay(small_csv(tmp_path, n=300, edit=lead), "--model", bundle, "--output", out)
    assert rc == 0, err
    rows = [json.loads(s) for s in out.read_text().splitlines()]
    assert len(rows) == 300 and list(rows[0]) == COLUMNS
    assert rows[0]["qw"] is None and rows[0]["held"] is True
    assert rows[5]["held"] is False and abs(math.hypot(*(rows[5][c] for c in ("qw", "qx", "qy", "qz"))) - 1) < 1e-5


def test_bad_input_never_gives_a_traceback(bundle, tmp_path):
    src = small_csv(tmp_path, n=50, edit=lambda rows: rows[10].__setitem__(2, "abc"))
    r = subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(src), "--model", str(bundle)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "line 12" in r.stderr and "'abc' is not a number" in r.stderr


@pytest.mark.parametrize("case", ["no file", "no bundle", "bad output name"])
def test_other_bad_arguments_are_one_line(bundle, tmp_path, case):
    args = {"no file": [tmp_path / "nope.csv", "--model", bundle],
            "no bundle": [DEMO, "--model", tmp_path / "nope.onnx"],
            "bad output name": [DEMO, "--model", bundle, "--output", tmp_path / "q.xlsx"]}[case]
    rc, out, err = replay(*args)
    assert rc == 2 and out == "" and err.count("\n") == 1


# ------------------------------------------------------------------------------ any bundle

def test_channels_are_mapped_by_name_and_missing_ones_listed(pressure_bundle, tmp_path):
    rc, _, err = replay(DEMO, "--model", pressure_bundle)
    assert rc == 2 and err.count("\n") == 1
    assert "missing column(s): pressure" in err

    def add_pressure(rows):
        for i, r in enumerate(rows):
            r.append(f"{1013.0 + 0.01 * i:.6g}")
    src = small_csv(tmp_path, n=400, edit=add_pressure)
    src.write_text(src.read_text().replace("movement", "movement,pressure", 1))
    out, png = tmp_path / "h.csv", tmp_path / "h.png"
    rc, stdout, err = replay(src, "--model", pressure_bundle, "--output", out, "--plot", png, "--json")
    assert rc == 0, err
    s = json.loads(stdout)
    assert s.get("inclination_rmse_deg") is None and s["resampled"] is False     # not attitude; any rate
    header, table = read_csv(out)
    assert header == ["t", "h0", "h1", "h2", "held"] and len(table) == 400
    rec = read_recording(src)
    np.testing.assert_allclose(table[:, 1:4], engine_outputs(pressure_bundle, rec.columns(
        ["gyr_x", "gyr_y", "gyr_z", "pressure"])), atol=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_both_engines_give_the_same_outputs(bundle, tmp_path):
    tables = {}
    for engine in ("numba", "onnxruntime"):
        out = tmp_path / f"{engine}.csv"
        rc, stdout, err = replay(DEMO, "--model", bundle, "--engine", engine, "--output", out, "--json")
        assert rc == 0, err
        assert json.loads(stdout)["engine"] == engine
        tables[engine] = read_csv(out)[1]
    np.testing.assert_allclose(tables["numba"][:, 1:5], tables["onnxruntime"][:, 1:5], rtol=0, atol=1e-5)


def test_help_teaches_and_choices_match_the_modules():
    from edge import replay as rp, runtime
    from edge.io import recordings
    assert rp.ENGINE_CHOICES == runtime.ENGINES
    assert set(rp.ACC_UNIT_CHOICES) <= set(recordings.ACC_UNITS)
    assert set(rp.GYR_UNIT_CHOICES) <= set(recordings.GYR_UNITS)
    assert rp.DEFAULT_GAP_S == recordings.DEFAULT_GAP_S
    r = subprocess.run([sys.executable, "-m", "edge.cli", "replay", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "usage: edge replay" in r.stdout and "examples:" in r.stdout
    for flag in ("--model", "--engine", "--acc-unit", "--gyr-unit", "--rate-hz", "--output", "--plot", "--json",
                 "--chunk"):
        assert flag in r.stdout


def test_parquet_in_and_out_equal_csv_in_and_out(bundle, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = small_csv(tmp_path, n=1500)
    rec = read_recording(src)
    cols = {"t": rec.t, **{c: rec.x[:, rec.index(c)].astype(np.float64) for c in IMU}}
    cols.update({q: rec.reference[:, k] for k, q in enumerate(["qw", "qx", "qy", "qz"])})
    cols["movement"] = rec.scored.astype(np.int8)
    pq.write_table(pa.table(cols), tmp_path / "in.parquet", row_group_size=500)     # three row groups
    rc, s_csv, err = replay(src, "--model", bundle, "--output", tmp_path / "o.csv", "--json")
    assert rc == 0, err
    rc, s_pq, err = replay(tmp_path / "in.parquet", "--model", bundle, "--output", tmp_path / "o.parquet", "--json")
    assert rc == 0, err
    header, table = read_csv(tmp_path / "o.csv")
    back = pq.read_table(tmp_path / "o.parquet")
    assert back.column_names == header == COLUMNS
    np.testing.assert_array_equal(np.column_stack([back.column(c).to_numpy().astype(np.float64) for c in header]),
                                  table)
    assert json.loads(s_pq)["inclination_rmse_deg"] == json.loads(s_csv)["inclination_rmse_deg"]
