"""`edge replay --detector` and `edge eval anomaly` end to end, on real ETT rows: the events the replay
reports are the ones a detector run by hand on the replay's own output file gives."""
import contextlib
import io
import json

import numpy as np
import pytest

import edge
from edge.cli import main
from edge.tasks.anomaly.detector import AnomalyDetector, load_config
from edge.io.datasets import CHANNELS, dataset_path, read_ett

ROWS = 1500
SPIKE_ROW = 1200


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*map(str, args)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """1,500 rows of ETTh1 (a temporary file, never committed) with a spike in OT, and the rows as read back."""
    dates, v = read_ett(dataset_path("ETTh1"))
    v = v[:ROWS].copy()
    v[SPIKE_ROW, 6] += 10 * v[:, 6].std()
    path = tmp_path_factory.mktemp("ett") / "etth1-spike.csv"
    with open(path, "w") as f:
        f.write("date," + ",".join(CHANNELS) + "\n")
        for d, row in zip(dates[:ROWS], v):
            f.write(str(d).replace("T", " ") + "," + ",".join(f"{x:.3f}" for x in row) + "\n")
    return path, np.round(v, 3)


@pytest.fixture(scope="module")
def forecaster():
    """The shipped ETTh1 forecaster: after each row, the next 720 rows of the 7 columns, horizon-major."""
    return "ett-forecast"


def test_replay_marks_the_events_a_detector_gives_on_the_bundles_forecasts(recording, forecaster, tmp_path):
    path, x = recording
    png = tmp_path / "events.png"
    rc, stdout, stderr = cli("replay", path, "--model", forecaster, "--detector", "anomaly-ett", "--plot", png,
                             "--json", "--no-progress")
    assert rc == 0, stderr
    summary = json.loads(stdout)["anomaly"]
    assert summary["residuals"] == "the bundle's one-step forecast"
    # by hand: the bundle run over the rows; the forecast of row t is its first 7 outputs after row t-1
    model = edge.load(forecaster)
    y = model.block(x.astype(np.float32)[:, None, :], model.init_state(1))[:, 0, :7]
    f = np.full_like(x, np.nan)
    f[1:] = y[:-1]
    det = AnomalyDetector(load_config("anomaly-ett")[0], list(CHANNELS))
    events = det.run(x, f)[0] + det.close()
    got = [(e["name"], e["start"], e["end"], e["cause"]) for e in summary["events"]]
    assert sorted(got) == sorted((e.name, e.start, e.end, e.cause) for e in events)
    assert any(e["name"] == "OT" and e["start"] == SPIKE_ROW for e in summary["events"])
    assert summary["count"] == len(events) and png.stat().st_size > 10_000


def test_replay_text_summary_lists_the_events(recording, forecaster):
    path, _ = recording
    rc, text, stderr = cli("replay", path, "--model", forecaster, "--detector", "anomaly-ett", "--no-progress")
    assert rc == 0, stderr
    events = json.loads(cli("replay", path, "--model", forecaster, "--detector", "anomaly-ett", "--json",
                            "--no-progress")[1])["anomaly"]["events"]
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("anomaly     anomaly-ett on residuals of the bundle"))
    assert f": {len(events)} event(s) on " in lines[at]
    listed = lines[at + 1:at + 9]
    for ln, e in zip(listed, events):
        assert ln.split()[0] == e["name"] and f"(samples {e['start']}–{e['end'] - 1})" in ln
    assert len(events) <= 8 or lines[at + 9].strip() == f"... and {len(events) - 8} more (all in --json)"


def test_replay_refuses_an_unknown_or_broken_detector_in_one_line(recording, forecaster, tmp_path):
    path, _ = recording
    rc, _, err = cli("replay", path, "--model", forecaster, "--detector", "anomaly-nope", "--no-progress")
    assert rc == 2 and "no detector configuration 'anomaly-nope'" in err and err.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"detector": {"enter": -1}}')
    rc, _, err = cli("replay", path, "--model", forecaster, "--detector", bad, "--no-progress")
    assert rc == 2 and str(bad) in err and "enter" in err and err.count("\n") == 1


def test_eval_anomaly_writes_the_results_table(tmp_path):
    rc, stdout, stderr = cli("eval", "anomaly", "--sets", "ett", "kdd", "--seeds", "1", "--out", tmp_path,
                             "--json", tmp_path / "r.json", "--no-progress")
    assert rc == 0, stderr
    text = (tmp_path / "anomaly-results.md").read_text()
    res = json.loads((tmp_path / "r.json").read_text())
    r = res["sections"][0]["result"]
    assert res["sections"][0]["residuals"] == "the built-in AR forecaster"
    for kind, n in r["labels"].items():
        recall = r["recall_by_kind"][kind]
        assert f"| {kind} | {n} | {r['detected'][kind]} | {100 * recall:.1f} % |" in text
    assert r["recall"] == pytest.approx(sum(r["detected"].values()) / sum(r["labels"].values()))
    assert res["kdd"]["anomaly"] == [4187, 4199] and "KDD-TSAD 135" in text
