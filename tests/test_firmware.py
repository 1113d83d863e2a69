"""firmware_sim: budgets from the ONNX graph, the integer reference, its C export on host gcc and
under qemu-system-arm (those skip, naming the tool, when a compiler or QEMU is missing)."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge.tasks.attitude.metric import inclination_rmse
from edge.bundle import read_bundle
from edge.cost import step_cost
from edge.firmware_sim import intarith_kernels as K
from edge.firmware_sim.export_c import export_c
from edge.firmware_sim.fit import ProfileError, budget, bundle_counts, graph_counts, load_profiles
from edge.firmware_sim.intarith import IntExecutor, calibrate, load_int8, normalised
from edge.firmware_sim.qemu import build_host, build_m4, run_host, run_qemu, tool_missing
from edge.io.recordings import read_recording
from edge.io.datasets import broad_root
from edge.io.channels import select_inputs
from edge.runtime import load

ROOT = Path(__file__).resolve().parents[1]
TRIAL = "03_undisturbed_slow_rotation_C.npz"


@pytest.fixture(scope="module")
def bench_bundles(tmp_path_factory):
    """`edge bench`'s LMU and S4D bundles (random init, seed 0), exported afresh (needs torch)."""
    pytest.importorskip("torch", reason="bench/make_bench_bundles.py needs torch (extra 'train')")
    out = tmp_path_factory.mktemp("bench")
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_bench_bundles.py"), str(out), "--only", "lmu,s4d",
                    "--parity-steps", "100"], check=True, capture_output=True)
    return out


def trial_inputs(model, n=None):
    rec = read_recording(broad_root() / TRIAL)
    return rec, select_inputs(rec, model.meta, "imu-attitude")[:n]


@pytest.fixture(scope="module")
def imu_int8():
    return load_int8("imu-attitude")


@pytest.fixture(scope="module")
def har():
    """har-watch, its held-out subjects, and the integer step calibrated on its training subjects."""
    from edge.tasks.classify.data import load_watch
    data = load_watch()
    held = np.isin(data.subject, read_bundle("har-watch").meta["metrics"]["held_out_subjects"])
    return load_int8("har-watch"), data.subset(np.flatnonzero(held))


@pytest.fixture(scope="module")
def lmu_int8(bench_bundles):
    b = read_bundle(bench_bundles / "lmu.onnx")
    x = np.cumsum(np.random.default_rng(0).normal(0, 0.1, (6000, 6)), axis=0).astype(np.float32)
    return b, IntExecutor(calibrate(b.meta, b.weights, x[:3000])), x[3000:]


# ---- budgets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["imu-attitude", "har-watch", "bench-lmu"])
def test_graph_macs_agree_with_an_independent_count(name, request):
    b = read_bundle(request.getfixturevalue("bench_bundles") / "lmu.onnx" if name == "bench-lmu" else name)
    model = onnx.load_from_string(b.model_bytes)
    init = {t.name: list(t.dims) for t in model.graph.initializer}
    made_by = {o: n for n in model.graph.node for o in n.output}

    def weight_size(name):  # an initializer, possibly read through a Transpose
        return math.prod(init[name]) if name in init else weight_size(made_by[name].input[0])

    # one stream: a MatMul/Gemm against a weight [K, N] (or [N, K]) costs K·N MACs, and so does a
    # Conv over the window of one step (weight [O, I, k], one output position)
    independent = sum(weight_size(n.input[1]) for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv"))
    assert graph_counts(model)["macs"] == independent
    # and the step program's own count of its matrix ops (edge.cost) says the same
    cost = step_cost(b.meta, b.weights)["macs_by_op"]
    matrix = sum(v for k, v in cost.items() if k in ("dense", "lstm", "lmu_memory", "conv"))
    # the LMU's u⊗B̄ is an element-wise Mul in the graph, not a MatMul: one per memory cell
    shapes = {s["name"]: s["shape"] for s in b.meta["state"]}
    outer = sum(math.prod(shapes[op["state_m"]]) for op in b.meta["program"]["ops"] if op["op"] == "lmu_memory")
    assert graph_counts(model)["macs"] == matrix - outer


def test_budget_is_the_profile_arithmetic():
    p = load_profiles()
    m4 = p["devices"]["cortex-m4f"]
    c = bundle_counts(read_bundle("imu-attitude"))
    r = budget(c, m4, p["energy"], "int8", 100.0, p["code_bytes"])
    cycles = c["macs"] * m4["cycles_per_mac"]["int8"] + c["other_ops"] * m4["cycles_per_op"]
    assert r["us_per_step"] == pytest.approx(cycles / m4["clock_hz"] * 1e6)
    assert r["duty"] == pytest.approx(r["us_per_step"] * 1e-6 * 100.0)
    assert r["energy_arith_nj"] == pytest.approx(c["macs"] * 0.3e-3)
    assert r["fits"] and r["flash_bytes"] == c["param_bytes"]["int8"] + p["code_bytes"]


def test_bad_profiles_file_is_one_line(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[device.x]\ntitle = 'x'\n[energy]\n")
    with pytest.raises(ProfileError, match="device 'x' lacks"):
        load_profiles(bad)
    bad.write_text("not toml ===")
    with pytest.raises(ProfileError, match=str(bad)):
        load_profiles(bad)


def test_fit_cli_refuses_garbage(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    r = subprocess.run([sys.executable, "-m", "edge.cli", "fit", str(junk), "--device", "cortex-m4f"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "junk.onnx" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "edge.cli", "fit", "imu-attitude", "--device", "cortex-m4f",
                        "--rate", "-3"], capture_output=True, text=True)
    assert r.returncode == 2 and "--rate" in r.stderr


# ---- integer reference -------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["s4d.onnx"], "op 1 (s4d) has no integer kernel"),
    (["lmu.onnx"], "give a calibration recording"),
    (["lmu.onnx", "--calibrate", str(ROOT / "examples" / "imu-demo.csv")], "missing column(s): x0, x1"),
])
def test_export_c_refuses_with_one_line(args, says, bench_bundles, tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge.cli", "export-c", str(bench_bundles / args[0]), *args[1:],
                        "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_replay_arith_int8_scores_the_demo_recording():
    import json
    runs = {}
    for arith in ("fp32", "int8"):
        r = subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(ROOT / "examples" / "imu-demo.csv"),
                            "--arith", arith, "--json"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        runs[arith] = json.loads(r.stdout)
    assert runs["int8"]["engine"] == "int8"
    assert abs(runs["int8"]["inclination_rmse_deg"] - runs["fp32"]["inclination_rmse_deg"]) <= 0.1

def test_activation_tables_are_within_1p4e4():
    from scipy.special import ndtr
    W16 = K.lut_tables()
    x = np.arange(-32768, 32768, 7)           # Q12 arguments over [-8, 8)
    for code, f in ((K.ACT_TANH, np.tanh), (K.ACT_SIGMOID, lambda v: 1 / (1 + np.exp(-v)))):
        y = np.array([K.activate(W16, code, np.int64(v), 12, 15, 32767) for v in x]) / 32768.0
        assert np.abs(y - f(x / 4096.0)).max() < 1.3e-4
    gelu = np.array([K.activate(W16, K.ACT_GELU, np.int64(v), 12, 12, 32767) for v in x]) / 4096.0
    assert np.abs(gelu - x / 4096.0 * ndtr(x / 4096.0)).max() < 8 * 1.3e-4 + 2 ** -12   # |x| ≤ 8 times Φ's error
    neg = x[x <= 0]
    e = np.array([K.lut(W16, K.LUT_EXP, np.int64(v)) for v in neg]) / 32768.0
    assert np.abs(e - np.exp(neg / 4096.0)).max() < 1.4e-4     # exp curves most: (1/32)²/8 + rounding


def test_int8_attitude_costs_under_0p1_degree(imu_int8):
    fp32 = load("imu-attitude", engine="numba")
    rec, x = trial_inputs(fp32)
    err = {}
    for name, m in (("fp32", fp32), ("int8", imu_int8)):
        q = m.block(x[:, None, :], m.init_state(1))[:, 0]
        err[name] = inclination_rmse(q.astype(np.float64), rec.reference, rec.scored)
    assert err["fp32"] < 2.0
    assert err["int8"] - err["fp32"] <= 0.1


def test_int8_har_loses_at_most_one_point(har):
    from edge.tasks.classify.evaluate import stream_probabilities
    model, test = har
    acc = {}
    for name, m in (("fp32", load("har-watch", engine="numba")), ("int8", model)):
        acc[name] = np.mean([p[-1].argmax() == y for p, y in zip(stream_probabilities(m, test), test.y)])
    assert acc["fp32"] > 0.6
    assert acc["int8"] >= acc["fp32"] - 0.01


# ---- C: host and Cortex-M4 under QEMU ----------------------------------------------------------
def _need(*tools):
    missing = tool_missing(tools)
    if missing:
        pytest.skip(missing)


def test_c_step_is_bit_exact_on_host_over_10000_steps(imu_int8, tmp_path):
    _need("gcc")
    _, x = trial_inputs(imu_int8, 10_000)
    x = normalised(imu_int8.meta, x)
    d = export_c(imu_int8.executor.plan, tmp_path, "imu-attitude")
    build_host(d)
    ref = imu_int8.executor.block(x[:, None, :], imu_int8.init_state(1))[:, 0]
    got = run_host(d, x, 4)
    assert got.shape == ref.shape and np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    src = (d / "model.c").read_text() + (d / "edge_int.c").read_text()
    assert "malloc" not in src and "#include <math.h>" not in src


@pytest.mark.parametrize("which", ["imu", "lmu", "har"])
def test_qemu_cortex_m4_is_bit_exact_and_fit_is_within_2x(which, imu_int8, lmu_int8, har, tmp_path):
    _need("arm-none-eabi-gcc", "qemu-system-arm")
    if which == "imu":
        bundle, ex = imu_int8.bundle, imu_int8.executor
        x = normalised(imu_int8.meta, trial_inputs(imu_int8, 400)[1])
    elif which == "har":   # not used to calibrate the profile's cycles: a check out of sample
        bundle, ex = har[0].bundle, har[0].executor
        x = normalised(bundle.meta, np.concatenate(har[1].x)[:300])
    else:
        bundle, ex, x = lmu_int8
        x = x[:400]
    d = export_c(ex.plan, tmp_path, which)
    sizes = build_m4(d)
    # exact weight bytes in flash: the int8/int16/int32/float arrays of the plan
    plan = ex.plan
    assert sizes["weights"] == plan.W8.size + 2 * plan.W16.size + 4 * (plan.W32.size + plan.WF.size + plan.state_init.size)
    assert sizes["flash"] <= 1 << 20 and sizes["ram"] <= 192 * 1024
    res = run_qemu(d, x, ex.output_size)
    ref = ex.block(x[:, None, :], ex.init_state(1))[:, 0]
    assert np.array_equal(res["y"].view(np.uint32), ref.view(np.uint32))
    assert res["instructions_per_tick"] == 40.0
    p = load_profiles()
    est = budget(bundle_counts(bundle), p["devices"]["cortex-m4f"], p["energy"])["cycles"]
    assert 0.5 <= est / res["instructions_per_step"] <= 2.0
