"""`edge replay --detector` and `edge eval anomaly` end to end, on real ETT rows: the events the replay
reports are the ones a detector run by hand on the replay's own output file gives."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch

from edge.cli import main
from edge.export import export_bundle
from edge.models import GRU, ForecastHead, Stack
from edge.timeseries.anomaly import AnomalyDetector, load_config
from edge.timeseries.ett import CHANNELS, dataset_path, read_ett

ROWS = 1500
SPIKE_ROW = 1200


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*map(str, args)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """1,500 rows of ETTh1 (a temporary file, never committed) with a spike in OT."""
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
def forecaster(tmp_path_factory):
    """A tiny untrained forecast bundle: the next 2 rows of the 7 columns, horizon-major."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fc") / "tiny-forecast.onnx"
    export_bundle(Stack(GRU(7, 8), ForecastHead(8, 2, 7)).eval(), path, input_size=7, task="forecast",
                  inputs=list(CHANNELS), outputs=[f"{c}+{h}" for h in (1, 2) for c in CHANNELS], parity_steps=20)
    return path


def test_replay_marks_the_events_a_detector_gives_on_the_bundles_forecasts(recording, forecaster, tmp_path):
    path, x = recording
    out, png = tmp_path / "y.csv", tmp_path / "events.png"
    rc, stdout, stderr = cli("replay", path, "--model", forecaster, "--detector", "anomaly-ett", "--output", out,
                             "--plot", png, "--json", "--no-progress")
    assert rc == 0, stderr
    summary = json.loads(stdout)["anomaly"]
    assert summary["residuals"] == "the bundle's one-step forecast"
    # by hand: the forecast of row t is the first 7 outputs written at row t-1
    y = np.loadtxt(out, delimiter=",", skiprows=1)[:, 1:8]
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
    rc, stdout, stderr = cli("replay", path, "--model", forecaster, "--detector", "anomaly-ett", "--no-progress")
    assert rc == 0, stderr
    lines = stdout.splitlines()
    head = next(ln for ln in lines if ln.startswith("anomaly     anomaly-ett on residuals of the bundle's one-step"))
    assert "event(s) on" in head and "OT" in head
    assert any(ln.split()[:1] == ["OT"] and f"(samples {SPIKE_ROW}–" in ln for ln in lines[lines.index(head) + 1:])


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
