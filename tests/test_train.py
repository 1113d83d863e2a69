"""Training utilities: seeded runs repeat exactly, an interrupted run resumes to the same weights,
early stopping keeps the best epoch, S4D's dynamics get their own optimizer group, and the MAC
counts match the closed forms."""
import os

import pytest
import torch
from torch import nn

from edge.models import (LMU, LSTM, S4D, Pointwise, Stack, count_parameters, fit, load_checkpoint, macs_per_step,
                         param_groups, save_checkpoint, seed_everything, summary_line)


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops: on a shared 2-core machine torch's second intra-op thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model():
    return Stack(Pointwise(nn.Linear(2, 4)), S4D(4, state_size=8), LMU(4, 6, order=4, theta=5.0),
                 Pointwise(nn.Dropout(0.1)), Pointwise(nn.Linear(6, 1)))


def batches(epoch, n=4, B=3, T=12):
    """Drawn from the global torch RNG on purpose: resuming must restore it."""
    for _ in range(n):
        x = torch.randn(B, T, 2)
        yield x, x[..., :1].cumsum(1) * 0.1


def mse(model, x, y):
    noise = 0.01 * torch.randn_like(x)  # another use of the global RNG inside the step
    return ((model(x + noise)[0] - y) ** 2).mean()


def validation(model):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(2, 12, 2, generator=g)
    return mse(model, x, x[..., :1].cumsum(1) * 0.1).item()


def train(epochs, checkpoint=None, train_batches=batches, **kw):
    seed_everything(0)
    model = small_model()
    result = fit(model, train_batches, mse, epochs=epochs, validate=validation, lr=1e-2, weight_decay=1e-2,
                 checkpoint=checkpoint, progress=False, **kw)
    return model, result


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


def test_seeded_runs_are_identical():
    a, ra = train(3)
    b, rb = train(3)
    assert_same_weights(a, b)
    assert ra == rb
    assert ra["step"] == 12 and len(ra["history"]) == 3


class Interrupt(Exception):
    pass


def interrupted(epoch_to_fail, batch_to_fail):
    def train_batches(epoch):
        for i, batch in enumerate(batches(epoch)):
            if (epoch, i) == (epoch_to_fail, batch_to_fail):
                raise Interrupt  # as a kill would, half-way through an epoch, after some updates
            yield batch
    return train_batches


def test_interrupted_run_resumes_to_bit_identical_weights(tmp_path):
    reference, ref_result = train(5, checkpoint=tmp_path / "ref.pt")

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        train(5, checkpoint=ckpt, train_batches=interrupted(3, 2))
    assert load_checkpoint(ckpt)["run"]["epoch"] == 3  # epochs 0..2 are on disk
    resumed, result = train(5, checkpoint=ckpt)  # a fresh process would build the model the same way
    assert_same_weights(resumed, reference)
    assert result == ref_result
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_resuming_from_weights_alone_would_not_be_exact(tmp_path):
    """The resume test can tell: continuing from the epoch-3 weights with a fresh optimizer and
    without the saved RNG states ends elsewhere."""
    reference, _ = train(5)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        train(5, checkpoint=ckpt, train_batches=interrupted(3, 0))
    seed_everything(0)
    naive = small_model()
    naive.load_state_dict(load_checkpoint(ckpt)["model"])
    fit(naive, batches, mse, epochs=2, lr=1e-2, weight_decay=1e-2, progress=False)
    assert not torch.equal(naive.state_dict()["layers.4.module.weight"], reference.state_dict()["layers.4.module.weight"])


def test_early_stopping_restores_best_weights():
    metrics = iter([3.0, 2.0, 1.0, 1.5, 1.2, 0.5, 0.1])
    snapshots = []

    def validate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(metrics)

    seed_everything(0)
    model = small_model()
    result = fit(model, batches, mse, epochs=7, validate=validate, patience=2, lr=1e-2, progress=False)
    assert result["stopped_early"] and result["epoch"] == 5
    assert result["best_epoch"] == 2 and result["best_metric"] == 1.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), k
    assert not torch.equal(snapshots[2]["layers.0.module.weight"], snapshots[4]["layers.0.module.weight"])


def test_maximize_keeps_the_highest_metric():
    metrics = iter([0.1, 0.9, 0.5])
    seed_everything(0)
    model = small_model()
    result = fit(model, batches, mse, epochs=3, validate=lambda m: next(metrics), maximize=True, progress=False)
    assert result["best_epoch"] == 1 and result["best_metric"] == 0.9


def test_iterables_and_steps_per_epoch(capsys):
    data = list(batches(0))
    seed_everything(0)
    assert fit(small_model(), data, mse, epochs=2, progress=False)["step"] == 2 * len(data)

    def endless():
        i = 0
        while True:
            i += 1
            yield i, data[i % len(data)]

    stream = endless()
    seen = []
    result = fit(small_model(), ((x, y) for i, (x, y) in stream if not seen.append(i)), mse, epochs=3,
                 steps_per_epoch=2, progress=True)
    assert result["step"] == 6 and seen == [1, 2, 3, 4, 5, 6]  # no batch drawn and dropped
    assert "epoch 3: loss" in capsys.readouterr().out


def test_param_groups_give_s4d_dynamics_no_decay_and_lower_lr():
    model = small_model()
    s4d = model.layers[1]
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    by_id = {id(p): g for g in groups for p in g["params"]}
    for p in (s4d.log_dt, s4d.log_A_real, s4d.A_imag):
        assert by_id[id(p)]["weight_decay"] == 0.0
        assert by_id[id(p)]["lr"] == pytest.approx(1e-4)
    for p in (s4d.C, s4d.D, s4d.output.weight, model.layers[0].module.weight, model.layers[2].hidden.weight):
        assert by_id[id(p)]["weight_decay"] == 0.05 and by_id[id(p)]["lr"] == 1e-3
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.AdamW(groups)  # a valid argument


def test_macs_of_a_linear_layer():
    assert macs_per_step(Stack(Pointwise(nn.Linear(10, 20))), 10) == 10 * 20
    assert count_parameters(nn.Linear(10, 20)) == 10 * 20 + 20


@pytest.mark.parametrize("I,H", [(1, 1), (3, 5), (10, 32), (7, 64)])
def test_macs_of_an_lstm_step(I, H):
    # four gates, each an (I + H) -> H matrix-vector product
    assert macs_per_step(LSTM(I, H), I) == 4 * H * (I + H)


def test_macs_of_an_lmu_step():
    C, H, d = 3, 8, 16
    # encoder C -> 1, memory d x d, hidden (d + C) -> H
    assert macs_per_step(LMU(C, H, d, 20.0), C) == C + d * d + (d + C) * H


def test_summary_line():
    line = summary_line(LSTM(10, 32), 10)
    assert line == f"LSTM: {count_parameters(LSTM(10, 32)):,} parameters, {4 * 32 * 42:,} MACs per step"


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": torch.ones(3)})
    with pytest.raises(Exception):
        save_checkpoint(path, {"a": lambda: None})  # unpicklable: fails part-way
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(3))  # the old file survives intact
    assert os.listdir(tmp_path) == ["c.pt"]
