"""Training utilities: seeding, AdamW parameter groups, cost counts and a small `fit` loop.

`fit` trains epoch by epoch. An epoch is the unit of validation, early stopping and checkpointing:
a checkpoint is written after an epoch's validation and holds everything the next epoch depends on
(model, optimizer, every RNG, counters, the best metric and weights), so that a run interrupted at
any point and resumed from its last checkpoint ends with bit-identical weights to one never
interrupted — provided its batches are a function of the epoch and the RNGs (see `fit`).
"""
import itertools
import math
import os
import random

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from edge.io.atomic import atomic_open


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels (a no-op for most CPU ops)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on an op without one
        torch.backends.cudnn.benchmark = False


def parse_training_args(ap, argv, checkpoint: bool = True):
    """Add the options every training command has (--seed, and --checkpoint to resume), parse, then seed
    everything and pin torch to one thread (deterministic, and no oversubscription on small machines)."""
    ap.add_argument("--seed", type=int, default=0)
    if checkpoint:
        ap.add_argument("--checkpoint", default=None, help="resume/checkpoint file")
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    torch.set_num_threads(1)
    return args


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: ordinary parameters get (lr, weight_decay); a parameter carrying an `_optim`
    dict (e.g. S4D's dynamics) gets that dict's weight_decay and lr · lr_scale, one group per setting."""
    groups, seen = {}, set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        opt = getattr(p, "_optim", None) or {}
        key = (opt.get("weight_decay", weight_decay), lr * opt.get("lr_scale", 1.0))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": glr} for (wd, glr), ps in groups.items()]


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (buffers such as the LMU's Ā are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def macs_per_step(model: torch.nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one streaming `model.step` on batch 1 from `init_state(1)`, in eval mode.

    Counted by torch's FlopCounterMode, which sees matrix products and convolutions (mm, addmm, bmm,
    einsum, conv) only: MACs = counted flops / 2. Elementwise work — activations, biases added
    outside addmm, LIF neurons, S4D's diagonal recurrence, normalisation — is not counted."""
    p = next(model.parameters(), None)
    x = torch.zeros(1, input_size, dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.step(x, model.init_state(1))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def summary_line(model: torch.nn.Module, input_size: int, name: str | None = None) -> str:
    """E.g. "LMU: 12,345 parameters, 6,789 MACs per step"."""
    name = name or type(model).__name__
    return f"{name}: {count_parameters(model):,} parameters, {macs_per_step(model, input_size):,} MACs per step"


# ---------------------------------------------------------------------------------------- checkpoints

def rng_states() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.copy()), pos, has_gauss, gauss)}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, gauss))


def save_checkpoint(path, obj) -> None:
    """Write atomically (`edge.io.atomic`): a crash mid-save leaves the previous checkpoint."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _clone_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------- fit

def fit(model, train_batches, loss_fn, *, epochs: int, validate=None, maximize: bool = False,
        lr: float = 1e-3, weight_decay: float = 0.0, clip: float | None = 1.0,
        steps_per_epoch: int | None = None, patience: int | None = None, restore_best: bool = True,
        checkpoint=None, checkpoint_every: int = 1, resume: bool = True, progress: bool = True) -> dict:
    """Train `model` with AdamW over `param_groups(model, lr, weight_decay)`.

    train_batches: `train_batches(epoch) -> iterable of (x, y)` (preferred: a fresh, reproducible
        epoch), or an iterable such as a list or DataLoader (iterated once per epoch; an endless
        iterator is read on from where the last epoch stopped); `steps_per_epoch` caps the batches.
        For an exact resume, an epoch's batches may depend on its index and on the global RNGs
        (checkpointed), not on state hidden elsewhere.
    loss_fn: `loss_fn(model, x, y) -> scalar tensor`.
    validate: `validate(model) -> float`, called once per epoch in eval mode under no_grad;
        lower is better unless `maximize`. With `patience`, training stops after that many epochs
        without improvement; with `restore_best`, the best epoch's weights are loaded at the end.
    checkpoint: a path; written every `checkpoint_every` epochs (and at the end), and resumed from
        if it exists and `resume`.
    Returns {"epoch", "step", "best_metric", "best_epoch", "stopped_early", "history"}; the model is
    left in eval mode.
    """
    optimizer = torch.optim.AdamW(param_groups(model, lr, weight_decay), lr=lr, weight_decay=weight_decay)
    sign = -1.0 if maximize else 1.0
    run = {"epoch": 0, "step": 0, "best_metric": None, "best_epoch": None, "stale": 0,
           "stopped_early": False, "history": []}
    best_state = None
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        ckpt = load_checkpoint(checkpoint)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_states(ckpt["rng"])
        run, best_state = ckpt["run"], ckpt["best_model"]

    def save():
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "rng": rng_states(), "run": run, "best_model": best_state})

    while run["epoch"] < epochs and not run["stopped_early"]:
        epoch = run["epoch"]
        model.train()
        batches = train_batches(epoch) if callable(train_batches) else train_batches
        if steps_per_epoch is not None:  # islice: take no batch beyond the last one used
            batches = itertools.islice(batches, steps_per_epoch)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        total, count = 0.0, 0
        for x, y in bar:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, x, y)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            run["step"] += 1
            value = loss.item()
            total, count = total + value, count + 1
            bar.set_postfix(loss=f"{value:.4g}")
        bar.close()
        metric = None
        if validate is not None:
            model.eval()
            with torch.no_grad():
                metric = float(validate(model))
            model.train()
            best = run["best_metric"]
            if not math.isnan(metric) and (best is None or sign * metric < sign * best):
                run.update(best_metric=metric, best_epoch=epoch, stale=0)
                best_state = _clone_state(model)
            else:
                run["stale"] += 1
                run["stopped_early"] = patience is not None and run["stale"] >= patience
        run["history"].append({"epoch": epoch, "loss": total / max(count, 1), "metric": metric})
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {total / max(count, 1):.4g}"
                       + ("" if metric is None else f", metric {metric:.4g}"))
        run["epoch"] = epoch + 1
        if run["epoch"] % checkpoint_every == 0 or run["epoch"] >= epochs or run["stopped_early"]:
            save()

    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {k: run[k] for k in ("epoch", "step", "best_metric", "best_epoch", "stopped_early", "history")}
