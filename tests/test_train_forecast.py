"""`edge train forecast` on a CSV the test writes (two noisy sines with trends), its bundle replayed by
`edge replay`, and the data rules of edge.tasks.forecast.series."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from edge.tasks.forecast.series import detect_period, fill_missing, parse_split, seasonal_naive

H, ROWS = 12, 3000


def write_series(path, rows=ROWS, seed=0):
    rng = np.random.default_rng(seed)
    k = np.arange(rows)
    a = np.sin(2 * np.pi * k / 48) + 0.002 * k + 0.1 * rng.standard_normal(rows)
    b = 0.5 * np.cos(2 * np.pi * k / 30) - 0.001 * k + 0.1 * rng.standard_normal(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "a", "b"])
        w.writerows([f"{60.0 * i:g}", f"{x:.6f}", f"{y:.6f}"] for i, x, y in zip(k, a, b))
    return np.stack([a, b], 1)


def edge(*argv):
    out = subprocess.run([sys.executable, "-m", "edge.cli", *map(str, argv)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_train_forecast_bundle_replays_one_row_per_row_and_beats_last_value(tmp_path):
    data = tmp_path / "two-sines.csv"
    x = write_series(data)
    bundle = tmp_path / "f.onnx"
    report = json.loads(edge("train", "forecast", data, "--target", "a,b", "--horizon", H, "--window", 32,
                             "--order", 16, "--rank", 8, "--thetas", "1,2", "--out", bundle, "--json",
                             "--no-progress"))
    assert report["split"] == {"train": [0, 2100], "val": [2100, 2400], "test": [2400, 3000]}
    assert {"last value", "least squares, one fit per channel",
            "least squares, one fit shared by all channels"} <= set(report["test"])
    replayed = tmp_path / "out.csv"
    edge("replay", data, "--model", bundle, "--output", replayed)
    with open(replayed) as f:
        rows = list(csv.reader(f))
    header, y = rows[0], np.array(rows[1:], dtype=np.float64)
    assert len(y) == ROWS                                       # one output row per input row
    assert header[1:3] == ["a+1", "b+1"] and f"b+{H}" in header
    # test MSE at horizon H from the replayed rows, in the data's units, against repeat-last on the
    # same origins (every origin of the test part whose target is in the file)
    cols = [header.index(f"a+{H}"), header.index(f"b+{H}")]
    origins = np.arange(2400 - 1, ROWS - H)
    ours = np.mean((y[origins][:, cols] - x[origins + H]) ** 2)
    last = np.mean((x[origins] - x[origins + H]) ** 2)
    assert ours < 0.5 * last, (ours, last)


def test_missing_values_are_interpolated_inside_and_dropped_at_the_edges():
    x = np.array([[np.nan, 1.0], [1.0, 2.0], [np.nan, 3.0], [3.0, np.nan], [4.0, 5.0], [5.0, np.nan]])
    filled, notes = fill_missing(x)
    np.testing.assert_allclose(filled, [[1, 2], [2, 3], [3, 4], [4, 5]])
    assert notes == {"dropped_edge_rows": 2, "interpolated": {0: 1, 1: 1}}


def test_split_period_and_seasonal_naive():
    assert parse_split("0.7,0.1,0.2") == (0.7, 0.1, 0.2)
    with pytest.raises(ValueError, match="three positive fractions"):
        parse_split("0.7,0.3")
    k = np.arange(2000)
    z = np.sin(2 * np.pi * k / 24)[:, None] + 0.05 * np.random.default_rng(1).standard_normal((2000, 1))
    assert detect_period(z, 200) == 24
    f = seasonal_naive(z, np.array([100]), 30, 24)
    np.testing.assert_array_equal(f[0, :, 0], np.r_[z[77:101, 0], z[77:83, 0]])   # the last 24 rows, repeated


def test_train_classify_grouped_split_beats_the_majority_class_and_replays(tmp_path):
    """Three classes told apart by frequency and level, 6 subjects: whole subjects per split; the
    bundle emits one probability per class every row."""
    rng = np.random.default_rng(0)
    data = tmp_path / "cls.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "subject", "label", "a", "b"])
        i = 0
        for subject in range(6):
            for seg in range(4):
                c = (subject + seg) % 3
                k = np.arange(150)
                a = np.sin(2 * np.pi * (0.05, 0.15, 0.3)[c] * k) + 0.3 * rng.standard_normal(150)
                b = 0.5 * (c == 2) + 0.3 * rng.standard_normal(150)
                for x, y in zip(a, b):
                    w.writerow([f"{0.02 * i:.2f}", subject, c, f"{x:.5f}", f"{y:.5f}"])
                    i += 1
    bundle = tmp_path / "c.onnx"
    r = json.loads(edge("train", "classify", data, "--label", "label", "--group", "subject", "--window", 40,
                        "--out", bundle, "--json"))
    assert r["grouped"] and r["split_rows"] == {"train": 2400, "val": 600, "test": 600}   # 4, 1, 1 subjects
    acc = r["accuracy"]
    assert acc["majority class"]["test"] < 0.5 < acc["edge LMU classifier"]["test"]
    out = tmp_path / "out.csv"
    edge("replay", data, "--model", bundle, "--output", out)
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0][1:4] == ["class_0", "class_1", "class_2"] and len(rows) == 1 + 3600
    p = np.array([row[1:4] for row in rows[1:]], dtype=np.float64)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
