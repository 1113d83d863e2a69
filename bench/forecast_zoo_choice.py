"""Which zoo layer for the ETT forecaster? LMU, S4D and LMUFormer on ETTh1 (all 7 channels), each
emitting the next 720 rows after every row, compared on the validation split (the test split is not
read). The gradient-trained models get the same wall-clock budget, the same level trick as the shipped
model (they predict the future minus the current row) and the same loss; the LMU is also fitted in
closed form, as `edge train ett-forecast` does.

    python bench/forecast_zoo_choice.py                 # ~3 x 4 min on 2 shared cores
    python bench/forecast_zoo_choice.py --budget-s 60   # a quicker look
"""
import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from edge.models import LMU, S4D, ForecastHead, LMUFormer, Pointwise, Stack, count_parameters, seed_everything
from edge.models.training.forecast import MAX_HORIZON, fit_forecaster
from edge.tasks.forecast.ett import HORIZONS, future, load_ett, scores

THETA, ORDER, DIM, WINDOW, BURN_IN, STRIDE = 336.0, 64, 64, 336 + 512, 336, 8


def candidates(channels: int) -> dict:
    head = lambda: ForecastHead(DIM, MAX_HORIZON, channels)  # noqa: E731
    return {
        "LMU (gradient)": Stack(LMU(channels, DIM, ORDER, THETA, memory_channels=channels), head()),
        "S4D x2": Stack(Pointwise(torch.nn.Linear(channels, DIM)), S4D(DIM, 64), S4D(DIM, 64), head()),
        "LMUFormer": LMUFormer(channels, DIM, head(), depth=1, order=ORDER, theta=THETA),
    }


def residual_forecasts(model, x, rows):
    """Forecasts [B, len(rows), 720, C] (normalised) after `rows` of x [B, T, C] by a model that predicts
    the future minus the current row; the 720·C-wide head runs on those rows only."""
    h = x
    for layer in model.layers[:-1]:
        h, _ = layer(h)
    y, _ = model.layers[-1](h[:, rows])
    return y.reshape(*y.shape[:2], MAX_HORIZON, x.shape[-1]) + x[:, rows, None, :]


def val_mse(forecasts: np.ndarray, z, data) -> dict:
    out = {}
    for h in HORIZONS:
        o = data.origins("val", h)
        out[h] = scores(forecasts[o, :h], future(z, o, h))["mse"]
    return out


def train_for(model, z, data, budget_s: float, seed: int = 0):
    """AdamW on random train windows (burn-in unscored) until the budget is spent."""
    rng = np.random.default_rng(seed)
    train_end = data.borders["train"][1]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start, steps = time.time(), 0
    bar = tqdm(desc=type(model).__name__, unit="step", leave=False)
    model.train()
    while time.time() - start < budget_s:
        starts = rng.integers(0, train_end - WINDOW - MAX_HORIZON, 8)
        x = np.stack([z[s:s + WINDOW] for s in starts])
        o = np.arange(BURN_IN, WINDOW, STRIDE) + rng.integers(STRIDE)
        o = o[o < WINDOW]
        y = np.stack([future(z, s + o, MAX_HORIZON) for s in starts])            # [B, T', 720, C]
        pred = residual_forecasts(model, torch.from_numpy(x.astype(np.float32)), o)
        loss = torch.mean((pred - torch.from_numpy(y.astype(np.float32))) ** 2)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return steps, time.time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=240.0, help="training wall time per gradient-trained model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seed_everything(0)
    data = load_ett("ETTh1", "multivariate")
    z = data.z
    rows = []
    t0 = time.time()
    origins = data.origins("train", MAX_HORIZON)
    model, features, w = fit_forecaster(z, origins[origins >= 2 * THETA], data.mean, data.std, ORDER, THETA, 16, 1e-4)
    pred = np.einsum("ncd,dh->nhc", features, w) + z[:, None, :]
    rows.append(("LMU, closed-form readout (shipped)", count_parameters(model), time.time() - t0, 0, val_mse(pred, z, data)))
    for name, m in candidates(z.shape[1]).items():
        steps, wall = train_for(m, z, data, args.budget_s)
        first = data.origins("val", max(HORIZONS))[0]
        with torch.no_grad():
            pred = np.zeros((len(z), MAX_HORIZON, z.shape[1]), np.float32)
            rows_val = np.arange(first, data.borders["val"][1])
            pred[rows_val] = residual_forecasts(m, torch.from_numpy(z.astype(np.float32))[None], rows_val)[0].numpy()
        rows.append((name, count_parameters(m), wall, steps, val_mse(pred, z, data)))
    print("| model | parameters | train wall s | steps | " + " | ".join(f"val MSE H{h}" for h in HORIZONS) + " | avg |")
    print("|---|---|---|---|" + "---|" * (len(HORIZONS) + 1))
    for name, n, wall, steps, v in rows:
        print(f"| {name} | {n:,} | {wall:.0f} | {steps} | " + " | ".join(f"{v[h]:.3f}" for h in HORIZONS)
              + f" | {np.mean(list(v.values())):.3f} |")


if __name__ == "__main__":
    main()
