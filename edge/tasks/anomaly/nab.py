"""`edge eval nab`: the streaming novelty detector on the Numenta Anomaly Benchmark, scored by NAB's rules.

One detector configuration (edge.tasks.anomaly.novelty.NoveltyConfig) for all 58 files, online:
each row's score is emitted as the row arrives, from that row and the rows before it. The threshold
is one number per profile for the whole corpus, chosen to maximise the corpus score (as NAB does for
every detector on its scoreboard). Prints standard, reward_low_FP_rate and reward_low_FN_rate beside
the published scoreboard, and µs per row (the detector's loop, wall clock, one thread).

examples:
  edge eval nab                                  the corpus in ../shared/data/nab
  edge eval nab --data path/to/NAB --json        one JSON object: standard, reward_low_FP_rate, ...
  edge eval nab --results-dir runs/nab           also DIR/<category>/edge_<file>.csv for NAB's own scorer
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.tasks.anomaly.nab_score import PROFILES, Corpus, score_corpus
from edge.tasks.anomaly.novelty import NoveltyConfig, NoveltyDetector

OWN_OPTIONS = True            # `edge eval nab` has its own options (its --json is a flag)
DEFAULT_ROOT = Path("..") / "shared" / "data" / "nab"
SCOREBOARD = [  # published, NAB's final_results.json: standard, low FP, low FN
    ("ARTime", 74.9, 65.2, 80.4), ("Numenta HTM", 70.1, 63.1, 74.3), ("CAD OSE", 69.9, 67.0, 73.2),
    ("HTM Java", 65.5, 53.3, 70.4), ("KNN CAD", 58.0, 43.4, 64.8), ("Relative entropy", 54.6, 47.6, 58.8),
    ("Random cut forest", 51.7, 38.4, 59.7), ("Twitter ADVec", 47.1, 33.6, 53.5),
    ("Windowed Gaussian", 39.6, 20.9, 47.4), ("random", 16.8, 5.8, 25.9), ("null", 0.0, 0.0, 0.0)]


def add_arguments(p) -> None:
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the NAB folder (data/, labels/, config/; default ../shared/data/nab)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--results-dir", default=None, metavar="DIR",
                   help="write every file's per-row scores as DIR/<category>/edge_<file>.csv "
                        "(timestamp,value,anomaly_score: NAB's results layout)")


def detect_corpus(corpus: Corpus, config: NoveltyConfig):
    """Every labelled file through a fresh detector: {name: (times, values, scores)} and the seconds
    spent in the detectors."""
    NoveltyDetector(config).run(np.zeros(4))            # compile outside the timing
    out, spent = {}, 0.0
    for name in corpus.files:
        times, values = corpus.series(name)
        start = time.perf_counter()
        scores = NoveltyDetector(config).run(values)
        spent += time.perf_counter() - start
        out[name] = (times, values, scores)
    return out, spent


def write_results(root: Path, series: dict) -> None:
    for name, (times, values, scores) in series.items():
        category, file = name.split("/")
        path = root / category / f"edge_{file}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for t, v, s in zip(times, values, scores):
                w.writerow([str(t).replace("T", " ").split(".")[0], repr(float(v)), repr(float(s))])


def evaluate(root, config: NoveltyConfig = NoveltyConfig(), results_dir=None) -> dict:
    corpus = Corpus(root)
    series, spent = detect_corpus(corpus, config)
    if results_dir:
        write_results(Path(results_dir), series)
    scores = score_corpus(corpus, {n: (t, s) for n, (t, _, s) in series.items()})
    rows = sum(len(v[0]) for v in series.values())
    return {**{p: round(scores[p]["score"], 2) for p in PROFILES},
            "thresholds": {p: scores[p]["threshold"] for p in PROFILES},
            "windows": scores["standard"]["windows"],
            "detected": {p: scores[p]["detected"] for p in PROFILES},
            "false_positives": {p: scores[p]["fp"] for p in PROFILES},
            "files": len(series), "rows": rows, "us_per_row": round(1e6 * spent / rows, 3),
            "detector": {"kind": "novelty", **config.as_dict()}, "data": str(root)}


def table(res: dict) -> str:
    ours = ("edge novelty (this run)", res["standard"], res["reward_low_FP_rate"], res["reward_low_FN_rate"])
    rows = sorted(SCOREBOARD + [ours], key=lambda r: -r[1])
    lines = ["| detector | standard | low FP | low FN |", "|---|---|---|---|"]
    for name, *s in rows:
        bold = "**" if name == ours[0] else ""
        lines.append(f"| {bold}{name}{bold} | " + " | ".join(f"{v:.1f}" for v in s) + " |")
    return "\n".join(lines)


def run(args) -> int:
    root = Path(args.data) if args.data else DEFAULT_ROOT
    res = evaluate(root, NoveltyConfig(), args.results_dir)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"NAB ({res['files']} files, {res['rows']:,} rows, {res['windows']} windows), one configuration: "
          f"{json.dumps(res['detector'])}")
    print(table(res))
    print(f"standard: {res['detected']['standard']} of {res['windows']} windows detected, "
          f"{res['false_positives']['standard']} false positives at threshold {res['thresholds']['standard']:.4g}")
    print(f"{res['us_per_row']:.3f} µs per row (the detector, one thread)")
    if args.results_dir:
        print(f"wrote per-row scores under {args.results_dir}", file=sys.stderr)
    return 0
