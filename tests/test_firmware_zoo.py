"""The integer reference and its C on the LMUFormer ops (conv windows, gelu, LMU memory, running
mean, softmax), on the spiking LMUFormer (LIF) and on a GRU, with tiny untrained zoo models
exported as bundles; and `edge fit`'s measured spike rates against spikes counted in torch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the zoo models need torch (extra 'train')")

from edge.bundle import read_bundle
from edge.export.bundle_export import export_bundle
from edge.firmware_sim.export_c import export_c
from edge.firmware_sim.fit import budget, bundle_counts, load_profiles, measured_spike_rates
from edge.firmware_sim.intarith import IntExecutor, calibrate
from edge.firmware_sim.qemu import build_host, run_host, tool_missing
from edge.models.training.har import build_model
from edge.runtime import load


def signal(T, seed):
    """A smooth 6-channel stream (a random walk through a low-pass), like a z-scored IMU."""
    g = np.random.default_rng(seed)
    x = np.cumsum(g.normal(0, 0.3, (T, 6)), axis=0)
    x = x - np.convolve(x[:, 0], np.ones(50) / 50, "same")[:, None]
    return (x / x.std(0)).astype(np.float32)


def exported(kind, folder):
    torch.manual_seed(0)
    if kind == "gru":
        from edge.models.heads import ForecastHead
        from edge.models.recurrent import GRU
        from edge.models.stack import Stack
        model, task = Stack(GRU(6, 16), ForecastHead(16, horizon=2, channels=6)).eval(), "forecast"
    else:
        model, task = build_model(kind, channels=6, classes=4, dim=8, order=8, theta=32.0).eval(), "classification"
        model.layers[-1].probabilities = True
    export_bundle(model, folder / "m.onnx", input_size=6, task=task, parity_steps=200)
    return kind, model, read_bundle(folder / "m.onnx")


@pytest.fixture(scope="module", params=["lmuformer", "spiking", "gru"])
def zoo(request, tmp_path_factory):
    return exported(request.param, tmp_path_factory.mktemp(request.param))


def test_integer_step_follows_the_float_step(zoo):
    kind, _, b = zoo
    x = signal(4000, 1)
    ex = IntExecutor(calibrate(b.meta, b.weights, x[:2000]))
    f = load(b.path, engine="numba")
    yf = f.block(x[2000:, None, :], f.init_state(1))[:, 0]
    yi = ex.block(x[2000:, None, :], ex.init_state(1))[:, 0]
    if kind == "gru":
        assert np.abs(yi - yf).max() < 0.02 * np.abs(yf).max()
        return
    assert np.abs(yi.sum(1) - 1).max() < 2e-3            # still probabilities (Q15 rounding)
    if kind == "lmuformer":
        assert np.abs(yi - yf).max() < 0.02
    else:  # a spike that flips near its threshold moves the output: compare decisions, not values
        assert np.mean(yi.argmax(1) == yf.argmax(1)) > 0.9


def test_c_step_is_bit_exact_on_host(zoo, tmp_path):
    missing = tool_missing(("gcc",))
    if missing:
        pytest.skip(missing)
    _, _, b = zoo
    x = signal(3000, 2)
    plan = calibrate(b.meta, b.weights, x[:1000])
    ex = IntExecutor(plan)
    d = export_c(plan, tmp_path, "zoo")
    build_host(d)
    ref = ex.block(x[1000:, None, :], ex.init_state(1))[:, 0]
    assert np.array_equal(run_host(d, x[1000:], plan.O).view(np.uint32), ref.view(np.uint32))


def test_spike_rates_match_torch_and_become_accumulates(tmp_path, monkeypatch):
    _, model, b = exported("spiking", tmp_path)
    x = signal(1500, 3)
    rates = measured_spike_rates(b, x)
    # independent: every LIF step of the torch model, recorded, over the same stream
    from edge.models.spiking import LIF
    seen, step = [], LIF.step

    def recording_step(self, xs, state):
        s, state = step(self, xs, state)
        seen.append(s)
        return s, state
    monkeypatch.setattr(LIF, "step", recording_step)
    with torch.no_grad():
        model(torch.from_numpy(x)[None])
    neurons = {i: b.meta["program"]["registers"][b.meta["program"]["ops"][i]["out"]] for i in rates}
    ours = sum(rates[i] * neurons[i] for i in rates) / sum(neurons.values())
    theirs = float(sum(s.sum() for s in seen) / sum(s[0].numel() for s in seen))
    assert 0 < ours < 1 and ours == pytest.approx(theirs, abs=0.01)
    c = bundle_counts(b, rates)
    assert c["acs"] > 0 and c["macs"] < c["dense_equivalent_macs"]
    p = load_profiles()
    r = budget(c, p["devices"]["cortex-m4f"], p["energy"], "fp32")
    assert r["energy_arith_nj"] == pytest.approx((c["macs"] * 4.6 + c["acs"] * 0.9) / 1000)
