"""NAB scoring (edge.tasks.anomaly.nab_score) against the published Numenta HTM scores, and against
the rules worked by hand on a tiny file; `edge eval nab` end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge.tasks.anomaly.nab_score import (Corpus, NABError, best_threshold, corpus_score, probation_rows,
                                          read_results, score_corpus, score_rows)

NAB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nab"
STANDARD = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}


def need_nab(part: str) -> Path:
    path = NAB / part
    if not path.exists():
        pytest.skip(f"needs the NAB corpus: {path} is missing")
    return path


def numenta_results(corpus: Corpus) -> dict:
    out = {}
    for name in corpus.files:
        category, file = name.split("/")
        out[name] = read_results(need_nab(f"reference-scores/numenta/{category}/numenta_{file}.gz"))
    return out


def test_numenta_htm_reference_scores_give_the_published_70_1():
    """Numenta HTM's published per-row scores at its published thresholds reproduce its published
    normalised scores (final_results.json: 70.101, 63.117, 74.320) to 1e-6."""
    corpus = Corpus(need_nab("labels/combined_windows.json").parents[1])
    thresholds = json.loads(need_nab("config/thresholds.json").read_text())["numenta"]
    published = json.loads(need_nab("reference-scores/final_results.json").read_text())["numenta"]
    got = score_corpus(corpus, numenta_results(corpus), {k: v["threshold"] for k, v in thresholds.items()})
    for profile, score in published.items():
        assert got[profile]["score"] == pytest.approx(score, abs=1e-6), profile
        assert got[profile]["raw"] == pytest.approx(thresholds[profile]["score"], abs=1e-6), profile
    assert round(got["standard"]["score"], 1) == 70.1
    assert got["standard"]["windows"] == 116


def scaled(y: float) -> float:
    """NAB's scaled sigmoid, written out: 2·sigmoid(−5y) − 1, and −1 from y = 3 on."""
    return -1.0 if y >= 3 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def tiny_file():
    """100 rows a minute apart (probation: 15 rows), windows on rows 30..39 and 70..79."""
    times = np.datetime64("2020-01-01T00:00") + np.arange(100).astype("timedelta64[m]")
    stamp = lambda i: str(times[i]).replace("T", " ") + ":00.000000"
    return times, [(stamp(30), stamp(39)), (stamp(70), stamp(79))]


def test_rules_worked_by_hand_on_a_tiny_file():
    times, windows = tiny_file()
    scores = np.zeros(100)
    scores[[5, 33, 36, 45, 60, 95]] = 1.0   # 5: on probation; 33 and 36 in window 0; 45, 60, 95 outside
    f = score_rows("tiny.csv", times, scores, windows)
    got = corpus_score([f], 0.5, STANDARD)
    tp = scaled(-(39 - 33 + 1) / 10) / scaled(-1.0)          # the earlier of the two detections counts
    fp = scaled((45 - 39) / 9) + scaled((60 - 39) / 9) + scaled((95 - 79) / 9)
    raw = tp - 1.0 + 0.11 * fp                                # window 1 missed
    assert got["raw"] == pytest.approx(raw, rel=1e-12)
    assert got["score"] == pytest.approx(100 * (raw + 2) / 4, rel=1e-12)
    assert (got["detected"], got["fp"]) == (1, 3)
    assert probation_rows(100) == 15 and probation_rows(20000) == 750


def test_a_detection_before_any_window_costs_the_full_fp_weight_and_perfect_scores_100():
    times, windows = tiny_file()
    scores = np.zeros(100)
    scores[[20, 30, 70]] = 1.0
    got = corpus_score([score_rows("tiny.csv", times, scores, windows)], 1.0, STANDARD)
    assert got["raw"] == pytest.approx(2.0 - 0.11, rel=1e-12)
    scores[20] = 0.0
    assert corpus_score([score_rows("tiny.csv", times, scores, windows)], 1.0, STANDARD)["score"] == pytest.approx(100)


def test_best_threshold_is_the_best_of_every_distinct_score():
    """The exact sweep agrees with scoring every candidate threshold one by one."""
    times, windows = tiny_file()
    rng = np.random.default_rng(0)
    files = [score_rows(f"f{k}.csv", times, rng.random(100) ** 4, windows) for k in range(3)]
    candidates = np.unique(np.concatenate([f.scores for f in files]))
    brute = max(corpus_score(files, t, STANDARD)["raw"] for t in candidates)
    t = best_threshold(files, STANDARD)
    assert corpus_score(files, t, STANDARD)["raw"] == pytest.approx(brute, rel=1e-12)


def test_a_window_edge_that_is_not_a_row_is_one_clear_error():
    times, windows = tiny_file()
    with pytest.raises(NABError, match="tiny.csv: window edge 2021"):
        score_rows("tiny.csv", times, np.zeros(100), [("2021-01-01 00:00:00", windows[0][1])])


# ---------------------------------------------------------------------------- the detector and the command

from edge.tasks.anomaly.novelty import NoveltyConfig, NoveltyDetector  # noqa: E402


def daily_series(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * np.arange(n) / 288) + 0.05 * rng.standard_normal(n)


def test_novelty_detector_is_causal_streams_like_a_block_and_has_fixed_state():
    x = daily_series()
    whole = NoveltyDetector().run(x)
    det = NoveltyDetector()
    size = det.state_bytes()
    head = det.run(x[:1234])
    stepped = [det.step(v) for v in x[1234:1300]]
    np.testing.assert_array_equal(head, whole[:1234])           # a row's score never needs later rows
    np.testing.assert_array_equal(stepped, whole[1234:1300])
    assert det.state_bytes() == size
    assert np.all(whole[:NoveltyConfig().calibration] == 0) and np.all((0 <= whole) & (whole <= 1))


def test_novelty_detector_flags_a_level_never_seen_at_its_first_row_and_skips_nan():
    x = daily_series()
    x[2000:2100] += 5.0                     # far outside the calibrated range
    x[1500] = np.nan
    det = NoveltyDetector()
    s = det.run(x)
    assert int(np.argmax(s)) == 2000 and s[2000] >= NoveltyConfig().alarm
    assert det.missing == 1 and s[1500] == 0.0
    assert s[2001:2100].max() < s[2000] / 2 + 1e-12            # the refractory halves what follows


def test_edge_eval_nab_json_and_results_layout(tmp_path):
    """`edge eval nab --json --results-dir`: the three profile keys; the files written follow NAB's
    layout, and scoring them again gives the same standard score."""
    import subprocess
    import sys
    root = need_nab("labels/combined_windows.json").parents[1]
    out = subprocess.run([sys.executable, "-m", "edge.cli", "eval", "nab", "--data", str(root), "--json",
                          "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert {"standard", "reward_low_FP_rate", "reward_low_FN_rate"} <= set(res)
    assert res["files"] == 58 and res["windows"] == 116
    corpus = Corpus(root)
    written = {}
    for name in corpus.files:
        category, file = name.split("/")
        path = tmp_path / category / f"edge_{file}"
        assert path.read_text().splitlines()[0] == "timestamp,value,anomaly_score"
        written[name] = read_results(path)
    again = score_corpus(corpus, written, res["thresholds"])
    assert round(again["standard"]["score"], 2) == res["standard"]
