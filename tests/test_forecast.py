"""ETT forecasting: protocol, baselines, the streaming LMU forecaster, its replay view, bad input.

Tests that read ETT need ../shared/data/ett (never shipped: CC BY-ND); they skip, saying so, without it.
"""
import csv

import numpy as np
import pytest
import torch

from edge.io.recordings import RecordingError, read_recording
from edge.tasks.forecast import view as forecast_view
from edge.tasks.forecast.ett import HORIZONS, future, load_ett, scores
from edge.io.datasets import CHANNELS, ett_root, read_ett, split_borders
from edge.tasks.forecast.baselines import fit_least_squares, fit_sparse_ar, gram, lasso_gram, repeat_last, windows


def _ett_or_skip():
    try:
        return ett_root()
    except FileNotFoundError as e:
        pytest.skip(f"ETT data missing: {e}")


# ------------------------------------------------------------------------------------------ protocol

def test_splits_and_normalisation_follow_the_protocol():
    root = _ett_or_skip()
    # 12/4/4 months of 30 days: 8,640/2,880/2,880 hourly rows, 4x for the 15-minute sets (data README)
    assert split_borders("ETTh1") == {"train": (0, 8640), "val": (8640, 11520), "test": (11520, 14400)}
    assert split_borders("ETTm2")["test"] == (46080, 57600)
    data = load_ett("ETTh1", "multivariate")
    with open(root / "ETTh1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = np.array([[float(r[c]) for c in CHANNELS] for r in rows[:8640]])
    np.testing.assert_allclose(data.mean, train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(data.std, np.sqrt(((train - train.mean(0)) ** 2).mean(0)), rtol=1e-12)
    assert len(data.origins("test", 24)) == 2880 - 24 + 1
    # repeat-last at H=96 is 1.294/0.713 (timeseries-data note; the DLinear paper's "Repeat" row 1.295/0.713)
    o = data.origins("test", 96)
    s = scores(repeat_last(data.z, o, 96), future(data.z, o, 96))
    assert s["mse"] == pytest.approx(1.294, abs=5e-4) and s["mae"] == pytest.approx(0.713, abs=5e-4)
    uni = load_ett("ETTh1", "univariate")
    assert uni.channels == ("OT",) and uni.mean[0] == pytest.approx(train[:, 6].mean())


# ------------------------------------------------------------------------------------------ baselines

def _ar_series(n=600, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    z = np.zeros((n, channels))
    for t in range(2, n):
        z[t] = 1.5 * z[t - 1] - 0.7 * z[t - 2] + rng.normal(0, 0.3, channels)
    return z


def test_least_squares_equals_numpy_lstsq():
    z, L, H = _ar_series(), 8, 5
    origins = np.arange(L - 1, len(z) - H)
    # the window minus its last value has a zero last column: with a vanishing ridge the solution is
    # lstsq's minimum-norm one
    model = fit_least_squares(gram(z, origins, L, H), ridge=1e-12)
    # independent: the level-subtracted design of every channel stacked, solved by numpy's lstsq
    xs, ys = [], []
    for c in range(z.shape[1]):
        for t in origins:
            xs.append(z[t - L + 1:t + 1, c] - z[t, c])
            ys.append(z[t + 1:t + 1 + H, c] - z[t, c])
    X, Y = np.array(xs), np.array(ys)
    w, *_ = np.linalg.lstsq(X, Y, rcond=None)
    # float64 bound: the level-free Gram matrix is formed from the raw one by subtraction, so each of its
    # L×(L+H) entries carries up to ~4 eps·max|raw entry| of rounding (‖δG‖, ‖δb‖ ≤ that × L), and the
    # ridge λ = 1e-12·mean diag biases the solution by λ‖G⁻¹‖‖w‖; the solve turns both into
    # ‖δw‖ ≤ ‖G⁻¹‖ (‖δG‖ ‖w‖ + ‖δb‖ + λ‖w‖) on the identifiable part (the zero last column is exact)
    stats = gram(z, origins, L, H)
    raw = max(np.abs(stats[3]).max(), np.abs(stats[4]).max())
    G = X[:, :-1].T @ X[:, :-1]
    delta = 4 * np.finfo(float).eps * raw * L
    lam = 1e-12 * np.trace(G) / L
    bound = np.linalg.norm(np.linalg.inv(G), 2) * (delta * (np.linalg.norm(w) + 1) + lam * np.linalg.norm(w))
    assert np.abs(model.weight - w).max() <= bound, (np.abs(model.weight - w).max(), bound)
    assert model.weight[-1].tolist() == [0.0] * H and w[-1] == pytest.approx(np.zeros(H), abs=1e-12)
    x = windows(z, origins[:3], L)
    expect = np.einsum("nlc,lh->nhc", x - x[:, -1:], w) + x[:, -1:]
    np.testing.assert_allclose(model.predict(z, origins[:3], H), expect, atol=1e-7)


def test_sparse_ar_is_the_lasso_solution():
    z, L, H = _ar_series(), 10, 3
    origins = np.arange(L - 1, len(z) - H)
    x = np.concatenate([windows(z[:, c:c + 1], origins, L)[..., 0] for c in range(2)])
    y = np.concatenate([future(z[:, c:c + 1], origins, H)[..., 0] for c in range(2)])
    # no penalty: ordinary least squares with an intercept
    free = fit_sparse_ar(gram(z, origins, L, H), l1=0.0, iterations=20000)
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    np.testing.assert_allclose(free.weight, coef[:-1], atol=1e-5)
    np.testing.assert_allclose(free.bias, coef[-1], atol=1e-5)
    # a penalty: the lasso's optimality conditions on the centred problem, checked directly
    l1 = 0.05
    sparse = fit_sparse_ar(gram(z, origins, L, H), l1=l1, iterations=20000)
    xc, yc = x - x.mean(0), y - y.mean(0)
    grad = xc.T @ (xc @ sparse.weight - yc) / len(x)
    nz = sparse.weight != 0
    assert (~nz).any() and nz.any()
    np.testing.assert_allclose(grad[nz], -l1 * np.sign(sparse.weight[nz]), atol=1e-6)
    assert np.all(np.abs(grad[~nz]) <= l1 + 1e-6)
    np.testing.assert_allclose(sparse.bias, y.mean(0) - x.mean(0) @ sparse.weight, atol=1e-10)


def test_lasso_with_zero_penalty_converges_from_a_warm_start():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 2))
    w = lasso_gram(x.T @ x, x.T @ y, 200, 0.0, iterations=2000, w0=np.ones((6, 2)), tol=0.0)
    np.testing.assert_allclose(w, np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-8)


# ------------------------------------------------------------------------------------------ the model

def _sines(n, channels=2, seed=0):
    """Two periodic series with noise and a slow level change: a forecaster must learn the period."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return (np.sin(2 * np.pi * t / 24 + np.arange(channels)) + 0.5 * np.sin(2 * np.pi * t / 7)
            + 0.3 * np.sin(2 * np.pi * t / 500) + rng.normal(0, 0.1, (n, channels)))


def _tiny_forecaster(z, horizon=12, order=16, theta=48.0, rank=6):
    from edge.models.training.forecast import fit_forecaster
    mean, std = z[:1500].mean(0), z[:1500].std(0)
    zn = (z - mean) / std
    origins = np.arange(2 * int(theta), 1500 - horizon)
    model, _, _ = fit_forecaster(zn, origins, mean, std, order, theta, rank, ridge=1e-4, horizon=horizon)
    return model, mean, std


@pytest.mark.slow
def test_tiny_fit_learns_and_beats_repeat_last():
    torch.manual_seed(0)
    z = _sines(2000)
    model, mean, std = _tiny_forecaster(z)
    with torch.no_grad():
        y, _ = model(torch.from_numpy(((z - mean) / std).astype(np.float32))[None])
    y = y[0].numpy().reshape(len(z), 12, 2)                           # raw units, horizon-major
    held_out = np.arange(1600, len(z) - 12)
    ours = np.mean((y[held_out] - future(z, held_out, 12)) ** 2)
    last = np.mean((repeat_last(z, held_out, 12) - future(z, held_out, 12)) ** 2)
    noise = 2 * 0.1 ** 2                                                # noise of target and of x_t
    assert ours < 0.25 * last, (ours, last)
    assert ours < 3 * noise


def _write_csv(path, z, names, bad=None):
    with open(path, "w") as f:
        f.write("date," + ",".join(names) + "\n")
        for t, row in enumerate(z):
            cells = [f"{v:.6f}" for v in row]
            if bad and t in bad:
                cells[bad[t][0]] = bad[t][1]
            h = np.datetime64("2020-01-01T00:00:00") + np.timedelta64(t, "h")
            f.write(str(h).replace("T", " ") + "," + ",".join(cells) + "\n")


def _export(net, mean, std, tmp_path, z, names, horizon=12):
    from edge.export.bundle_export import export_bundle
    path = tmp_path / "tiny-forecast.onnx"
    zn = (z - mean) / std
    export_bundle(net, path, input_size=len(names), task="forecast", name="tiny-forecast",
                  inputs=names, outputs=[f"{c}+{h + 1}" for h in range(horizon) for c in names],
                  sample_rate_hz=1 / 3600, normalisation={"mean": mean.tolist(), "std": std.tolist()},
                  parity_input=np.ascontiguousarray(zn[:300, None], dtype=np.float32), parity_steps=300,
                  config={"horizon": horizon, "channels": names})
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forecast")
    z = _sines(2000)
    net, mean, std = _tiny_forecaster(z)
    names = ["a", "OT"]
    return {"z": z, "names": names, "net": net, "bundle": _export(net, mean, std, tmp, z, names), "tmp": tmp}


def test_replayed_stream_equals_parallel_forward(tiny):
    from edge.replay import replay
    from edge.runtime import load
    csv_path = tiny["tmp"] / "stream.csv"
    _write_csv(csv_path, tiny["z"], tiny["names"])
    model = load(tiny["bundle"])
    rec = read_recording(csv_path, channels=tiny["names"])
    res = replay(rec, model, chunk=333)
    net = tiny["net"]
    mean, std = model.meta["normalisation"]["mean"], model.meta["normalisation"]["std"]
    zn = (rec.x[:, [rec.channels.index(n.lower()) for n in tiny["names"]]] - mean) / std
    with torch.no_grad():
        y, _ = net(torch.from_numpy(zn.astype(np.float32))[None])      # the parallel face (FFT)
    y = y[0].numpy()
    scale = max(1.0, float(np.abs(y).max()))
    assert not res.held.any() and res.y.shape == y.shape
    assert np.abs(res.y - y).max() <= 1e-4 * scale


def test_view_metric_matches_a_direct_computation(tiny):
    from edge.replay import replay
    from edge.runtime import load
    csv_path = tiny["tmp"] / "view.csv"
    z = tiny["z"][:400]
    _write_csv(csv_path, z, tiny["names"])
    model = load(tiny["bundle"])
    rec = read_recording(csv_path, channels=tiny["names"])
    res = replay(rec, model)
    m = forecast_view.metric(rec, res, model.meta)
    mean, std = np.array(model.meta["normalisation"]["mean"]), np.array(model.meta["normalisation"]["std"])
    zn = (rec.x.astype(np.float64) - mean) / std
    fc = (res.y.astype(np.float64).reshape(len(z), 12, 2) - mean) / std
    for h in (1, 12):
        sq, ab, rl = [], [], []
        for t in range(len(z) - h):   # independent: loop over origins and steps
            for s in range(h):
                sq.append((fc[t, s] - zn[t + 1 + s]) ** 2)
                ab.append(np.abs(fc[t, s] - zn[t + 1 + s]))
                rl.append((zn[t] - zn[t + 1 + s]) ** 2)
        got = m["by_horizon"][str(h)]
        assert got["mse"] == pytest.approx(np.mean(sq), rel=1e-9)
        assert got["mae"] == pytest.approx(np.mean(ab), rel=1e-9)
        assert got["repeat_last_mse"] == pytest.approx(np.mean(rl), rel=1e-9)
        assert got["origins"] == len(z) - h
    lines = forecast_view.summary_lines(m)
    assert lines[0].startswith("forecast    H=1 ") and all(len(l) > 12 and l[:12].strip() in ("", "forecast") for l in lines)
    png = tiny["tmp"] / "view.png"
    forecast_view.plot(rec, res, png, "tiny", m, model.meta)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("cell, why", [("abc", "'abc' is not a finite number"), ("", "'' is not a finite number"),
                                       ("inf", "'inf' is not a finite number")])
def test_read_ett_names_line_and_column_of_a_garbage_cell(tmp_path, cell, why):
    path = tmp_path / "bad.csv"
    _write_csv(path, np.ones((20, 7)), list(CHANNELS), bad={6: (6, cell)})
    with pytest.raises(RecordingError) as e:
        read_ett(path)
    assert str(e.value) == f"{path}, line 8: column OT: {why}"
    assert len(str(e.value).splitlines()) == 1


def test_read_ett_refuses_short_rows_and_missing_columns(tmp_path):
    short = tmp_path / "short.csv"
    _write_csv(short, np.ones((5, 7)), list(CHANNELS))
    lines = short.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]
    short.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match=r"line 4: 7 cells, the header has 8"):
        read_ett(short)
    nocol = tmp_path / "nocol.csv"
    _write_csv(nocol, np.ones((5, 6)), list(CHANNELS[:6]))
    with pytest.raises(RecordingError, match=r"line 1: header lacks column\(s\) OT"):
        read_ett(nocol)


def test_garbage_rows_in_a_replayed_stream_are_not_scored(tiny):
    """NaN/garbage cells: the replay holds those rows; the view scores only fed origins and known targets."""
    from edge.replay import replay
    from edge.runtime import load
    csv_path = tiny["tmp"] / "garbage.csv"
    z = tiny["z"][:300]
    _write_csv(csv_path, z, tiny["names"], bad={100: (1, "nan"), 101: (0, "nan")})
    model = load(tiny["bundle"])
    rec = read_recording(csv_path, channels=tiny["names"])
    res = replay(rec, model)
    assert res.held[100] and res.held[101] and not res.held[102]
    h1 = forecast_view.metric(rec, res, model.meta)["by_horizon"]["1"]
    mean, std = np.array(model.meta["normalisation"]["mean"]), np.array(model.meta["normalisation"]["std"])
    zn = (rec.x.astype(np.float64) - mean) / std
    fc = (res.y.astype(np.float64)[:, :2] - mean) / std              # the one-step-ahead forecasts
    sq = [(fc[t, c] - zn[t + 1, c]) ** 2 for t in range(len(z) - 1) for c in range(2)
          if t not in (100, 101) and np.isfinite(zn[t + 1, c])]
    # held origins 100 and 101 (2 channels each) and the unknown target OT at row 100 (origin 99) drop out
    assert len(sq) == (len(z) - 1) * 2 - 5
    assert h1["mse"] == pytest.approx(np.mean(sq), rel=1e-9)
    assert h1["origins"] == len(sq) // 2


# ------------------------------------------------------------------------------------------ shipped

@pytest.mark.parametrize("name, dataset, channels", [("ett-forecast", "ETTh1.csv", CHANNELS), ("ett-forecast-ot", "ETTh1.csv", ("OT",)),
                                                     ("ett-forecast-ettm2", "ETTm2.csv.gz", CHANNELS)])
def test_shipped_bundle_states_its_layout_and_train_statistics(name, dataset, channels):
    from edge.bundle import read_bundle
    root = _ett_or_skip()
    meta = read_bundle(name).meta
    assert meta["task"] == "forecast" and meta["model"]["config"]["horizon"] == 720
    assert [c["name"] for c in meta["inputs"]] == list(channels)
    names = [o["name"] for o in meta["outputs"]]
    assert len(names) == 720 * len(channels) and names[len(channels) - 1] == "OT+1" and names[-1] == "OT+720"
    _, values = read_ett(root / dataset)
    rows = 8640 * (4 if "ettm" in name else 1)
    train = values[:rows, [CHANNELS.index(c) for c in channels]]
    np.testing.assert_allclose(meta["normalisation"]["mean"], train.mean(0), rtol=1e-9)
    np.testing.assert_allclose(meta["normalisation"]["std"], train.std(0), rtol=1e-9)
    assert meta["parity"]["numba_max_abs"] < 1e-3 and meta["parity"]["onnxruntime_max_abs"] < 1e-3
