"""`edge train ett-forecast`: the shipped ETT forecasters, one bundle per dataset and setting, each
an LMU whose readout is fitted in closed form on the train split (validation only reports).

The model is a zoo `LMU` followed by a `ForecastHead`, streaming one row per step and emitting the
next 720 rows of every channel after each row (the first H serve horizon H):

    z_t = (x_t − mean) / std                                 (the runtime, from the bundle metadata)
    m_t = Ā m_{t−1} + B̄ z_t          per channel c: a Legendre memory of order d over θ rows
    h_t = Pᵀ (m_t,c − z_t,c·e)         per channel: k numbers; e = (I − Ā)⁻¹ B̄ is the memory of a
                                       constant 1, so h does not move when the level shifts
    ŷ_t+1..t+H,c = std_c (z_t,c + Qᵀ h_t,c) + mean_c

W = P Q [d, H] is one ridge regression shared by all channels (channel-independent, as NLinear and
PatchTST are: measured on ETTh1 validation, a cross-channel map overfits, 1.02 vs 0.41 MSE at
H=24), truncated to rank k by its SVD so that the head stays small. In the bundle the per-channel
maps are block-diagonal `dense` weights of the LMU's hidden layer (identity activation) and of the
head. Why an LMU, and why a readout fitted in closed form: see docs/forecast.md.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from edge.bundle import BUNDLE_DIR
from edge.export.bundle_export import export_bundle
from edge.tasks.forecast.ett import HORIZONS, SETTINGS, future, load_ett, scores
from edge.io.datasets import DATASETS
from edge.tasks.forecast.baselines import ridge_solve
from edge.tasks.forecast.evaluate import bundle_name

from edge.models.heads import ForecastHead
from edge.models.lmu import LMU, LegendreMemory
from edge.models.stack import Stack

MAX_HORIZON = 720


def legendre_features(z: np.ndarray, memory: LegendreMemory) -> np.ndarray:
    """Level-free memories m_t − z_t·e of each channel, [N, C, d] float64, by the recurrence in float64
    (the same system the bundle steps in float32)."""
    A, B = memory.A_bar.double().numpy(), memory.B_bar.double().numpy()
    e = np.linalg.solve(np.eye(len(A)) - A, B)
    m = np.zeros((z.shape[1], len(A)))
    out = np.empty((len(z), z.shape[1], len(A)))
    for t in range(len(z)):
        m = m @ A.T + z[t][:, None] * B
        out[t] = m
    return out - z[:, :, None] * e


def fit_readout(features, z, origins, horizon: int, ridge: float) -> np.ndarray:
    """W [d, H]: one ridge regression over every channel's rows, target the future minus z_t."""
    xx, xy = 0.0, 0.0
    for c in range(z.shape[1]):
        x = features[origins, c]                                              # [n, d]
        y = future(z[:, c:c + 1], origins, horizon)[..., 0] - z[origins, c:c + 1]  # [n, H]
        xx, xy = xx + x.T @ x, xy + x.T @ y
    return ridge_solve(xx, xy, ridge)


def low_rank(w: np.ndarray, rank: int):
    """P [d, k], Q [k, H] with P Q the best rank-k approximation of W."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return u[:, :rank] * s[:rank], vt[:rank]


def build_model(memory: LegendreMemory, p: np.ndarray, q: np.ndarray, mean, std) -> Stack:
    """The streaming model of the module docstring, weights set from P, Q and the train statistics."""
    channels, order = memory.channels, memory.order
    rank, horizon = q.shape
    A, B = memory.A_bar.double().numpy(), memory.B_bar.double().numpy()
    e = np.linalg.solve(np.eye(order) - A, B)
    lmu = LMU(channels, channels * rank + channels, order, memory.theta, memory_channels=channels,
              activation="identity")
    head = ForecastHead(channels * rank + channels, horizon, channels)
    enc = np.eye(channels)                                       # each channel drives its own memory
    hid = np.zeros((channels * rank + channels, channels * order + channels))
    out = np.zeros((horizon, channels, channels * rank + channels))  # horizon-major output rows
    for c in range(channels):
        rows = slice(c * rank, (c + 1) * rank)
        hid[rows, c * order:(c + 1) * order] = p.T
        hid[rows, channels * order + c] = -p.T @ e
        hid[channels * rank + c, channels * order + c] = 1.0     # z_t rides along for the level
        out[:, c, rows] = std[c] * q.T
        out[:, c, channels * rank + c] = std[c]
    with torch.no_grad():
        lmu.memory.A_bar.copy_(memory.A_bar)
        lmu.encoder.weight.copy_(torch.from_numpy(enc))
        lmu.encoder.bias.zero_()
        lmu.hidden.weight.copy_(torch.from_numpy(hid))
        lmu.hidden.bias.zero_()
        head.linear.weight.copy_(torch.from_numpy(out.reshape(horizon * channels, -1)))
        head.linear.bias.copy_(torch.from_numpy(np.tile(mean, horizon)))
    return Stack(lmu, head).eval()


def validation_scores(features, z, w, data) -> dict:
    """MSE/MAE of the rank-k readout on the validation split, per horizon (normalised space)."""
    out = {}
    for h in HORIZONS:
        o = data.origins("val", h)
        pred = np.einsum("ncd,dh->nhc", features[o], w[:, :h]) + z[o][:, None, :]
        out[str(h)] = {k: round(v, 4) for k, v in scores(pred, future(z, o, h)).items()}
    return out


def fit_forecaster(z, origins, mean, std, order: int, theta: float, rank: int, ridge: float,
                   horizon: int = MAX_HORIZON):
    """Fit the readout on `origins` of the normalised series z [N, C] and build the streaming model;
    returns (model, features, W) with W the rank-k readout [d, horizon]."""
    memory = LegendreMemory(z.shape[1], order, theta)
    features = legendre_features(z, memory)
    p, q = low_rank(fit_readout(features, z, origins, horizon, ridge), rank)
    return build_model(memory, p, q, mean, std), features, p @ q


def train_one(dataset, setting, args, root=None):
    start = time.time()
    data = load_ett(dataset, setting, root)
    z = data.z
    origins = data.origins("train", MAX_HORIZON)
    origins = origins[origins >= 2 * args.theta]   # the memory has seen two windows
    model, features, w = fit_forecaster(z, origins, data.mean, data.std, args.order, args.theta, args.rank, args.ridge)
    val = validation_scores(features, z, w, data)
    name = bundle_name(dataset, setting)
    out = Path(args.out) / f"{name}.onnx"
    hours = 0.25 if dataset.startswith("ETTm") else 1.0
    wall = time.time() - start
    meta = export_bundle(
        model, out, input_size=len(data.channels), task="forecast", name=name,
        inputs=[{"name": c, "unit": ""} for c in data.channels],
        outputs=[f"{c}+{h + 1}" for h in range(MAX_HORIZON) for c in data.channels],
        sample_rate_hz=1.0 / (3600.0 * hours),
        normalisation={"mean": data.mean.tolist(), "std": data.std.tolist(),
                       "fitted_on": f"{dataset} train split, rows {data.borders['train'][0]}..{data.borders['train'][1] - 1}"},
        parity_input=np.ascontiguousarray(z[-2000:, None, :], dtype=np.float32), parity_steps=2000,
        config={"dataset": dataset, "setting": setting, "horizon": MAX_HORIZON, "channels": list(data.channels),
                "layout": "y[h*C + c] is channel c at row t+1+h (h = 0..horizon-1), in the input's units",
                "order": args.order, "theta": args.theta, "rank": args.rank, "ridge": args.ridge},
        provenance={"command": "edge train ett-forecast", "data": f"{dataset} (ETDataset, CC BY-ND 4.0), train split",
                    "train_wall_s": round(wall, 1), "train_origins": int(len(origins))},
        metrics={"validation": val})
    return out, meta, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="edge train ett-forecast", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:\n"
                                        "  edge train ett-forecast                      all 8 bundles into edge/bundles\n"
                                        "  edge train ett-forecast --datasets ETTh1 --settings univariate --out /tmp\n")
    ap.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--data", default=None, help="ETT folder (default: ../shared/data/ett or $EDGE_ETT_ROOT)")
    ap.add_argument("--out", default=str(BUNDLE_DIR), help="folder for the bundles (default: the package's)")
    ap.add_argument("--order", type=int, default=64, help="Legendre memory order d (default 64)")
    ap.add_argument("--theta", type=float, default=336.0, help="memory window θ in rows (default 336)")
    ap.add_argument("--rank", type=int, default=16, help="rank k of the readout per channel (default 16)")
    ap.add_argument("--ridge", type=float, default=1e-4, help="ridge, relative to the mean Gram diagonal")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    jobs = [(d, s) for d in args.datasets for s in args.settings]
    for dataset, setting in tqdm(jobs, desc="ett-forecast", file=None):
        out, meta, wall = train_one(dataset, setting, args, args.data)
        val = meta["metrics"]["validation"]
        tqdm.write(f"{out} ({out.stat().st_size / 1024:.0f} KiB, {wall:.0f} s): validation MSE "
                   + ", ".join(f"H{h} {val[h]['mse']:.3f}" for h in val) + f"; parity {json.dumps(meta['parity'])}")
    print(f"wall time {time.time() - start:.0f} s on {torch.get_num_threads()} torch thread(s)")
    return 0
