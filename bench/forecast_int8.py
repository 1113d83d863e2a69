"""The ETT forecasting bundles in fp32 (Numba engine) and in the integer reference: test-split MSE
by horizon, streamed row by row exactly as `edge eval ett-forecast` streams them.

    python bench/forecast_int8.py                      # ett-forecast (ETTh1, 7 channels) and ett-forecast-ot
    python bench/forecast_int8.py ETTh1:multivariate ETTm1:univariate

The integer step is calibrated on the train split's rows (never validation or test).
"""
import sys

import numpy as np

from edge.bundle import BUNDLE_DIR
from edge.firmware_sim.intarith import load_int8
from edge.runtime import load
from edge.tasks.forecast.ett import HORIZONS, future, load_ett, scores
from edge.tasks.forecast.evaluate import bundle_name, stream_forecasts


def main(cases):
    print("bundle                 arith  " + "  ".join(f"MSE@{h:<4}" for h in HORIZONS))
    for case in cases:
        dataset, setting = case.split(":")
        data = load_ett(dataset, setting)
        path = BUNDLE_DIR / f"{bundle_name(dataset, setting)}.onnx"
        first = data.borders["test"][0] - 1
        for arith, model in (("fp32", load(path, engine="numba")), ("int8", load_int8(path))):
            ours = stream_forecasts(model, data, first)
            horizon = model.meta["model"]["config"]["horizon"]
            mse = []
            for h in HORIZONS:
                o = data.origins("test", h)
                mse.append(scores(ours[o - first, :h], future(data.z, o, h))["mse"] if h <= horizon else float("nan"))
            print(f"{path.stem:<22} {arith:<5}  " + "  ".join(f"{m:8.4f}" for m in mse))


if __name__ == "__main__":
    main(sys.argv[1:] or ["ETTh1:multivariate", "ETTh1:univariate"])
