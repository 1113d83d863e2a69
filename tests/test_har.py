"""Activity classification (issue 6, part 2): loaders, the streaming classifier bundles, the
early-decision curve, the replay view, and a tiny training run that learns."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edge
from edge.models.fused_lif import fused_lif
from edge.models.training.har import build_model, export, normalisation, train
from edge.io.recordings import read_recording
from edge.runtime import InputError
from edge.tasks.classify import view
from edge.tasks.classify.data import (DatasetError, load_basic_motions, load_watch, read_ts, subject_folds,
                                      wheel_file)
from edge.tasks.classify.evaluate import early_decision_curve, score_bundle, spike_counts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def watch():
    return load_watch()


# ------------------------------------------------------------------------------------------ loaders

def test_watch_loader_is_what_seglearn_documents(watch):
    """seglearn's docstring: 140 recordings (n, 6) at 50 Hz, 7 exercises, subjects; the data note:
    947–2618 samples, 244,102 in all, 20 per exercise, 14 per subject (1–10)."""
    assert len(watch) == 140 and watch.rate_hz == 50.0
    assert {x.shape[1] for x in watch.x} == {6}
    lengths = [len(x) for x in watch.x]
    assert (min(lengths), max(lengths), sum(lengths)) == (947, 2618, 244102)
    assert watch.classes == ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
    assert np.bincount(watch.y).tolist() == [20] * 7
    assert sorted(set(watch.subject.tolist())) == list(range(1, 11))
    assert np.bincount(watch.subject)[1:].tolist() == [14] * 10
    # acceleration converted from g: the raw file times standard gravity; a wrist at rest-ish reads ~1 g
    raw = np.load(wheel_file("seglearn", "data/watch_dataset.npy", "1.2.5"), allow_pickle=True).item()
    np.testing.assert_allclose(watch.x[7][:, :3], raw["X"][7][:, :3] * 9.80665, rtol=1e-6)
    np.testing.assert_allclose(watch.x[7][:, 3:], raw["X"][7][:, 3:], rtol=1e-6)
    g = np.median(np.linalg.norm(np.concatenate(watch.x)[:, :3], axis=1))
    assert 8.5 < g < 11.5


def test_basic_motions_loader_reads_the_ts_files():
    train, test = load_basic_motions("train"), load_basic_motions("test")
    assert len(train) == len(test) == 40
    assert {x.shape for x in train.x + test.x} == {(100, 6)}
    assert train.classes == ("Standing", "Running", "Walking", "Badminton")
    assert np.bincount(train.y).tolist() == np.bincount(test.y).tolist() == [10] * 4
    # the first series of the TRAIN file, first values of dimension 0, read here from the text
    path = wheel_file("aeon", "datasets/data/BasicMotions/BasicMotions_TRAIN.ts", "1.6.0")
    first = next(line for line in path.read_text().splitlines() if line and not line.startswith(("#", "@")))
    dims = first.split(":")
    np.testing.assert_allclose(train.x[0][:3, 0], [float(v) for v in dims[0].split(",")[:3]], rtol=1e-6)
    np.testing.assert_allclose(train.x[0][:3, 5], [float(v) for v in dims[5].split(",")[:3]], rtol=1e-6)
    assert train.classes[train.y[0]] == dims[-1]


@pytest.mark.parametrize("body, problem", [
    ("@classLabel true a b\n@data\n1,2,3:4,5,6:c\n", "label 'c' is not one of"),
    ("@classLabel true a b\n@dimensions 2\n@data\n1,2,3:a\n", "1 dimensions, the header says 2"),
    ("@classLabel true a b\n@data\n1,2,x:4,5,6:a\n", "could not convert"),
    ("@classLabel true a b\n@data\n1,2:4,5,6:a\n", "different lengths"),
    ("@classLabel false\n@data\n1,2:a\n", "no labels"),
    ("\x00\x01garbage", "no @classLabel"),
])
def test_ts_reader_names_file_and_line_of_garbage(tmp_path, body, problem):
    path = tmp_path / "bad.ts"
    path.write_text(body)
    with pytest.raises(DatasetError, match=problem) as e:
        read_ts(path)
    assert str(path) in str(e.value)


def test_watch_loader_refuses_another_file(tmp_path):
    bad = tmp_path / "watch.npy"
    np.save(bad, np.arange(3))
    with pytest.raises(DatasetError, match="not the seglearn watch dataset|lacks"):
        load_watch(bad)


def test_subject_folds_hold_out_every_subject_once(watch):
    folds = subject_folds(watch.subject, 5)
    assert sorted(s for f in folds for s in f) == list(range(1, 11))
    assert all(len(f) == 2 for f in folds)
    with pytest.raises(ValueError):
        subject_folds(watch.subject, 11)


# ------------------------------------------------------------------------------ early-decision curve

def test_early_decision_curve_matches_brute_force():
    """Brute force: after a fraction f, the samples seen are the fewest n with n ≥ f·T; the decision is
    the argmax of the last of them."""
    rng = np.random.default_rng(3)
    lengths = [1, 2, 3, 7, 10, 20, 33]
    probs = [rng.random((n, 4)) for n in lengths]
    labels = rng.integers(0, 4, len(lengths))
    fractions = (0.05, 0.1, 1 / 3, 0.5, 0.7, 0.99, 1.0)
    expected = []
    for f in fractions:
        hits = 0
        for p, y in zip(probs, labels):
            n = next(k for k in range(1, len(p) + 1) if k >= f * len(p) - 1e-9)
            hits += int(np.argmax(p[n - 1]) == y)
        expected.append(hits / len(lengths))
    np.testing.assert_allclose(early_decision_curve(probs, labels, fractions), expected)


# ------------------------------------------------------------------------------- fused LIF

def test_fused_lif_training_path_equals_autograd_through_the_steps():
    """The spiking trainer's TorchScript LIF loop: the same spikes and final potentials as the
    model's own forward, and the gradients autograd takes through the unrolled steps."""
    torch.manual_seed(0)
    model = _excite(build_model("spiking", 6, 7, dim=8, order=8, theta=16.0)).train()
    x = torch.randn(3, 50, 6)
    weight = torch.randn(3, 50, 7)

    def run():
        model.zero_grad()
        y, state = model(x)
        (y * weight).sum().backward()
        return y.detach(), state, {n: p.grad.clone() for n, p in model.named_parameters()}

    y_ref, s_ref, g_ref = run()
    with fused_lif(model):
        y, s, g = run()
    assert torch.equal(y, y_ref)
    assert all(torch.equal(s[k], s_ref[k]) for k in s_ref)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-4, atol=1e-5, msg=name)
    assert all("forward" not in vars(lif) for lif in model.lif_layers())  # the originals are back
    # one layer driven hard enough to fire often: the reset path matters to the gradient
    lif = model.lif_layers()[0]
    x = (2 * torch.randn(4, 80, lif.channels)).requires_grad_()
    y_ref, s_ref = lif(x)
    (y_ref * weight[:1, :1, :1]).sum().backward()
    g_ref, x.grad = x.grad, None
    with fused_lif(lif):
        y, s = lif(x)
    (y * weight[:1, :1, :1]).sum().backward()
    assert 0.1 < y_ref.mean() < 0.9 and torch.equal(y, y_ref) and torch.equal(s["v"], s_ref["v"])
    torch.testing.assert_close(x.grad, g_ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ bundles

def _settle_batchnorm(model, data, norm, steps=3):
    """A few training-mode forwards so that BatchNorm's running statistics are not the identity."""
    model.train()
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    with torch.no_grad():
        for i in range(steps):
            model(torch.from_numpy((np.stack([x[:300] for x in data.x[i * 4:i * 4 + 4]]) - mean) / std))
    return model.eval()


def _excite(model):
    """BatchNorm gains above 1 (as tests/test_zoo_parity.py does) so that untrained LIF neurons fire."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.weight.data = 1.5 + 1.5 * torch.rand(m.num_features, generator=g)
            m.bias.data = -0.2 + 0.8 * torch.rand(m.num_features, generator=g)
    return model.eval()


def _tiny_bundle(tmp_path, watch, kind, name):
    torch.manual_seed(0)
    norm = normalisation(watch)
    model = build_model(kind, 6, 7, dim=16, order=16, theta=64.0)
    model = _excite(model) if kind == "spiking" else _settle_batchnorm(model, watch, norm)
    path = tmp_path / f"{name}.onnx"
    export(model, path, watch, norm, name=name, held_out=[1, 6], parity_x=watch.x[0][:300],
           config={"model": kind}, provenance={})
    return model, norm, path


@pytest.fixture(scope="module")
def tiny_har(tmp_path_factory, watch):
    return _tiny_bundle(tmp_path_factory.mktemp("har"), watch, "lmuformer", "tiny-har")


def test_streaming_probabilities_equal_the_parallel_forward(tiny_har, watch):
    """A real watch recording through the bundle (both engines, one sample at a time, the runtime's
    own normalisation) against the torch model's parallel forward over the whole recording."""
    model, norm, path = tiny_har
    x = watch.x[11]
    with torch.no_grad():
        ref = model(((torch.from_numpy(x) - torch.tensor(norm["mean"])) / torch.tensor(norm["std"]))[None])[0][0].numpy()
    np.testing.assert_allclose(ref.sum(1), 1.0, atol=1e-5)  # probabilities
    for engine in ("numba", "onnxruntime"):
        m = edge.load(path, engine=engine)
        state = m.init_state(1)
        y = np.stack([m.step(x[t][None], state)[0].copy() for t in range(len(x))])
        assert np.abs(y - ref).max() < 1e-4, engine
    meta = edge.load(path).meta
    assert meta["task"] == "classification" and meta["sample_rate_hz"] == 50.0
    assert [o["name"] for o in meta["outputs"]] == list(watch.classes)
    assert [(c["name"], c["unit"]) for c in meta["inputs"]] == [
        ("acc_x", "m/s^2"), ("acc_y", "m/s^2"), ("acc_z", "m/s^2"), ("gyr_x", "rad/s"), ("gyr_y", "rad/s"),
        ("gyr_z", "rad/s")]


def test_eval_scores_the_held_out_subjects_as_torch_would(tiny_har, watch, tmp_path):
    """`edge eval har-watch` on the tiny bundle: its held-out subjects (1, 6) only, and each
    full-length decision equal to the torch model's over the whole recording."""
    model, norm, path = tiny_har
    held = np.flatnonzero(np.isin(watch.subject, [1, 6]))
    with torch.no_grad():
        expected = [int(model(((torch.from_numpy(watch.x[i]) - torch.tensor(norm["mean"]))
                               / torch.tensor(norm["std"]))[None])[0][0, -1].argmax()) for i in held]
    r = score_bundle(path, watch)
    assert r["index"].tolist() == held.tolist() and r["pred"].tolist() == expected
    assert r["accuracy"] == np.mean(np.array(expected) == watch.y[held]) and r["curve"][-1] == r["accuracy"]
    out = subprocess.run([sys.executable, "-m", "edge.cli", "eval", "har-watch", "--bundles", str(path),
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "har-results.md").read_text()
    assert f"| 1, 6 | 28 | **{100 * r['accuracy']:.1f} %** |" in report
    assert (tmp_path / "har-early-decision.png").stat().st_size > 10_000


def test_spiking_bundle_spike_counts_equal_torch(tmp_path, watch):
    """Spikes per step counted from the bundle's own program (every LIF output) against torch's LIF
    layers on the same real recording."""
    model, norm, path = _tiny_bundle(tmp_path, watch, "spiking", "tiny-har-spiking")
    data = watch.subset([0, 25])
    data.x = [x[:400] for x in data.x]
    counts = spike_counts(edge.load(path, engine="numba"), data)  # (2·400,)
    per_step = {}  # LIF -> spikes per step; the parallel face drives every LIF through its `step`
    for lif in model.lif_layers():
        def step(x_, s_, orig=lif.step, key=id(lif)):
            y_, s2 = orig(x_, s_)
            per_step.setdefault(key, []).append(y_.sum(-1))
            return y_, s2
        lif.step = step
    with torch.no_grad():
        for x in data.x:
            model((torch.from_numpy(x)[None] - torch.tensor(norm["mean"])) / torch.tensor(norm["std"]))
    for lif in model.lif_layers():
        del lif.step
    ref = sum(torch.cat(v) for v in per_step.values()).numpy()  # (2·400,): recording 0, then 1
    assert ref.mean() > 1, "the test must see neurons firing"
    # float32 sums in another order can put a membrane on the other side of the threshold; rarely
    assert np.mean(counts == ref) > 0.99 and abs(counts.sum() - ref.sum()) <= 1e-3 * ref.sum()


# --------------------------------------------------------------------------------- replay view

class _Res:
    def __init__(self, t, y):
        self.t, self.y = t, y


def test_view_metric_against_hand_count(tmp_path):
    """5 samples, 3 classes; labels 2,2,NaN,1,1 and argmax 0,2,2,1,1: 3 of 4 labelled right, right
    at the end, right from sample 1 on (0.1 s; the unlabelled sample 2 is not scored), decision
    unchanged since sample 3 (0.3 s)."""
    csv = tmp_path / "r.csv"
    rows = "\n".join(f"{0.1 * i:.1f},0,0,9.81,0,0,0,{lab}" for i, lab in enumerate(["2", "2", "", "1", "1"]))
    csv.write_text("t,acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z,label\n" + rows + "\n")
    rec = read_recording(csv)
    y = np.array([[.5, .2, .3], [.1, .2, .7], [.2, .3, .5], [.2, .6, .2], [.1, .8, .1]], np.float32)
    meta = {"outputs": [{"name": n} for n in "abc"], "inputs": []}
    m = view.metric(rec, _Res(rec.t, y), meta)
    assert m["labelled_samples"] == 4 and m["accuracy_over_time"] == 0.75
    assert m["final_class"] == "b" and m["correct_at_end"] and math.isclose(m["correct_from_s"], 0.1)
    assert math.isclose(m["decided_since_s"], 0.3) and math.isclose(m["final_probability"], 0.8, rel_tol=1e-6)
    assert any(line.startswith("accuracy    ") for line in view.summary_lines(m))


def test_view_refuses_a_label_that_is_no_class(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("t,acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z,label\n0,0,0,9.81,0,0,0,1\n0.1,0,0,9.81,0,0,0,7.5\n")
    rec = read_recording(csv)
    meta = {"outputs": [{"name": n} for n in "abc"], "inputs": []}
    with pytest.raises(InputError, match="'label', sample 1: 7.5 is not a class index 0..2"):
        view.metric(rec, _Res(rec.t, np.full((2, 3), 1 / 3, np.float32)), meta)


def test_replay_of_the_demo_with_the_shipped_bundle(tmp_path):
    """The documented command: the demo (a subject the shipped bundle never saw) with its label."""
    plot = tmp_path / "p.png"
    out = subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(ROOT / "examples/har-watch-demo.csv"),
                          "--model", "har-watch", "--plot", str(plot), "--json", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    m = s["task_metric"]
    assert m["labelled_samples"] == 1597 and m["label_at_end"] == "TRAP"
    assert 0.0 <= m["accuracy_over_time"] <= 1.0 and plot.stat().st_size > 10_000


# --------------------------------------------------------------------------------- learning

@pytest.mark.slow
def test_tiny_training_learns_above_chance(tmp_path):
    """BasicMotions (4 balanced classes, chance 25 %): a tiny LMUFormer trained for seconds on the
    train split, exported, and scored through the runtime on the test split it never saw."""
    torch.manual_seed(0)
    data = load_basic_motions("train")
    norm = normalisation(data)
    model = build_model("lmuformer", 6, 4, dim=16, order=16, theta=32.0)
    train(model, data, norm, epochs=4, steps=15, batch=16, length=100, lr=5e-3, rotate_deg=10.0, speed=0.1,
          seed=0, progress=False)
    path = tmp_path / "bm.onnx"
    export(model, path, data, norm, name="bm", held_out=None, parity_x=data.x[0], config={"model": "lmuformer"},
           provenance={})
    r = score_bundle(path, load_basic_motions("test"))
    assert r["accuracy"] >= 0.6, r["accuracy"]
