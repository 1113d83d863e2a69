"""fp32 (Numba engine) vs int8 (firmware_sim.intarith) inclination error of the shipped
imu-attitude bundle on the BROAD test split, run as `edge replay` runs a recording.

    python bench/int8_attitude.py          # ~2 min on 2 cores
"""
import json
import sys

from edge.tasks.attitude.evaluate import broad_trials, evaluate_attitude, format_table
from edge.firmware_sim.intarith import load_int8
from edge.io.recordings import Recording
from edge.replay import replay
from edge.runtime import load
from edge.tasks.attitude.view import quaternions


def estimator(model):
    def estimate(acc, gyr, rate_hz):
        res = replay(Recording.from_imu(acc, gyr, rate_hz=rate_hz), model)
        return quaternions(res)
    return estimate


def main():
    models = {"imu-attitude fp32 (numba)": load("imu-attitude", engine="numba"),
              "imu-attitude int8 (intarith)": load_int8("imu-attitude")}
    results = evaluate_attitude({k: estimator(m) for k, m in models.items()}, broad_trials(split="test"))
    print(format_table(results))
    fp, q = (results["estimators"][k]["mean"] for k in models)
    print(f"int8 - fp32 mean inclination RMSE: {q - fp:+.4f} deg (target <= +0.1)")
    if len(sys.argv) > 1:
        json.dump(results, open(sys.argv[1], "w"), indent=2, default=float)


if __name__ == "__main__":
    main()
