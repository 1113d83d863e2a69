"""The attitude model: both faces agree, torch ≡ onnxruntime ≡ Numba on real data, the filter is
right on a simulated IMU with exact truth, and the shipped bundle replays the demo recording."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edge
from edge.tasks.attitude.metric import inclination_rmse
from edge.engine.numba_engine import NumbaExecutor
from edge.export import export_bundle
from edge.export.lower import lower
from edge.firmware_sim.imu import synthetic_imu
from edge.models import Stack, unroll
from edge.models.attitude import AttitudeFilter, LearnedAttitude

BROAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "broad"
ROOT = Path(__file__).resolve().parents[1]
RATE = 285.714


def broad_slice(start, n, trial="01_undisturbed_slow_rotation_A.npz"):
    d = np.load(BROAD / trial)
    x = np.concatenate([d["acc"], d["gyr"]], 1)[start:start + n].astype(np.float32)
    return x, d["quat"][start:start + n], d["movement"][start:start + n]


def learned_model(seed=0):
    torch.manual_seed(seed)
    m = LearnedAttitude(RATE, hidden=16)
    torch.nn.init.normal_(m.correction.weight, std=0.1)  # a correction that does something
    return m.eval()


@pytest.mark.parametrize("start", [0, 20000])  # the opening rest (rest detection fires) and motion
def test_faces_agree_on_real_data(start):
    x, _, _ = broad_slice(start, 600)
    for model in (Stack(AttitudeFilter(RATE)), learned_model()):
        with torch.no_grad():
            y, state = model(torch.from_numpy(x)[None])
            y_step, state_step = unroll(model, torch.from_numpy(x)[None])
            y1, s1 = model(torch.from_numpy(x[:250])[None])
            y2, _ = model(torch.from_numpy(x[250:])[None], s1)
        assert (y - y_step).abs().max() <= 1e-5
        assert (torch.cat([y1, y2], 1) - y).abs().max() <= 1e-5
        for k in state:
            assert (state[k] - state_step[k]).abs().max() <= 1e-5 * max(1.0, state[k].abs().max().item())


def test_filter_tracks_a_simulated_imu():
    """Exact truth from the simulator: inclination within a degree with realistic sensor errors,
    and the rest-detected bias close to the drawn one."""
    rec = synthetic_imu(120.0, rate_hz=RATE, seed=3, rests=[(0.0, 10.0), (60.0, 70.0)], initial="level")
    program, weights, spec = lower(Stack(AttitudeFilter(RATE)).eval(), 6)  # the engine: ≡ torch, tested above
    ex = NumbaExecutor(program, weights, spec)
    state = ex.init_state(1)
    y = ex.block(rec.x.astype(np.float32)[:, None], state)[:, 0]
    err = inclination_rmse(y[:, :4].astype(np.float64), rec.reference)
    assert err < 1.0, f"{err:.2f}° on a simulated IMU"
    (offset, shape), = [(o, s) for name, o, s in ex.state_layout if name == "0.bias"]
    bias_error = np.abs(state[0, offset:offset + 3] - rec.meta["gyr_bias"]).max()
    assert bias_error < 0.005, f"gyro bias off by {bias_error:.4f} rad/s (drawn {rec.meta['gyr_bias']})"


@pytest.fixture(scope="module")
def attitude_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("att") / "att.onnx"
    x, _, _ = broad_slice(20000, 500)
    export_bundle(learned_model(), path, input_size=6, task="attitude", name="att",
                  inputs=["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"], outputs=["qw", "qx", "qy", "qz"],
                  sample_rate_hz=RATE, parity_input=x[:, None], parity_steps=500)
    return path


def test_engines_agree_on_real_data(attitude_bundle):
    """torch vs both engines over 2,000 steps (the torch filter is a Python loop), and the two
    engines against each other over 10,000 steps with the opening rest and motion."""
    x, _, _ = broad_slice(0, 10_000, "06_undisturbed_fast_rotation_A.npz")
    x = np.concatenate([x, broad_slice(20000, 10_000)[0]])[::2].copy()  # rest, then motion
    with torch.no_grad():
        y_ref, _ = learned_model()(torch.from_numpy(x[:2000])[None])
    ys = {}
    for engine in ("numba", "onnxruntime"):
        m = edge.load(attitude_bundle, engine=engine)
        ys[engine] = m.block(x[:, None], m.init_state(1))[:, 0].copy()
        err = np.abs(ys[engine][:2000] - y_ref[0].numpy()).max()
        assert err <= 1e-4, f"{engine} vs torch: {err:.2e}"
    err = np.abs(ys["numba"] - ys["onnxruntime"]).max()
    assert err <= 1e-4, f"numba vs onnxruntime over {len(x)} steps: {err:.2e}"


SHIPPED = ROOT / "edge" / "bundles" / "imu-attitude.onnx"


@pytest.mark.skipif(not SHIPPED.exists(), reason="imu-attitude is not shipped in this checkout")
def test_shipped_bundle_replays_the_demo_without_torch(tmp_path):
    out = tmp_path / "out.csv"
    code = ("import sys, json; from edge.cli import main; "
            f"rc = main(['replay', {str(ROOT / 'examples/imu-demo.csv')!r}, '--output', {str(out)!r}, '--json']); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import json
    summary = json.loads(r.stdout)
    rmse = summary["inclination_rmse_deg"]
    assert rmse < 1.5, f"shipped model: {rmse:.2f}° on the demo recording"
