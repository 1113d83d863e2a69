"""µs per sample of the streaming anomaly detector (edge.tasks.anomaly.detector), block and per-sample
step, beside the imu-attitude bundle it watches in `edge replay --detector`, measured in one run.

    python bench/anomaly_detector.py            # ETTh1 (7 channels) and the IMU demo (6 channels)

Each row is the best of --repeats runs over the whole stream, after one untimed run (compilation).
"""
import argparse
import time
from pathlib import Path

import numpy as np

import edge
from edge.io.recordings import IMU_CHANNELS, read_recording
from edge.tasks.anomaly.detector import AnomalyDetector, load_config
from edge.io.datasets import CHANNELS, dataset_path, read_ett

DEMO = Path(__file__).resolve().parents[1] / "examples" / "imu-demo.csv"


def best_of(repeats, fn) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def detector_times(config, channels, x, repeats):
    def block():
        AnomalyDetector(config, channels).run(x)

    def steps():
        det = AnomalyDetector(config, channels)
        for row in x:
            det.step(row)
    return best_of(repeats, block) / len(x) * 1e6, best_of(repeats, steps) / len(x) * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    _, ett = read_ett(dataset_path("ETTh1"))
    imu = read_recording(DEMO).columns(IMU_CHANNELS).astype(np.float64)
    model = edge.load("imu-attitude", engine="numba")
    x32 = np.ascontiguousarray(imu, np.float32)[:, None, :]
    engine_us = best_of(args.repeats, lambda: model.block(x32, model.init_state(1))) / len(imu) * 1e6

    print(f"{'stream':<28}{'samples':>9}{'block µs':>10}{'step µs':>9}{'step/block':>11}{'vs engine':>10}")
    for name, config, channels, x in (("ETTh1, anomaly-ett", "anomaly-ett", CHANNELS, ett),
                                      ("imu-demo, anomaly-imu", "anomaly-imu", IMU_CHANNELS, imu)):
        block, step = detector_times(load_config(config)[0], list(channels), x, args.repeats)
        print(f"{name:<28}{len(x):>9,}{block:>10.2f}{step:>9.2f}{step / block:>10.1f}×{block / engine_us:>9.2f}×")
    print(f"{'imu-attitude bundle, numba':<28}{len(imu):>9,}{engine_us:>10.2f}    (the engine the detector sits beside)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
