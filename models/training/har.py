"""`edge train har-watch`: a streaming LMUFormer (or its spiking version) that emits class
probabilities at every sample of a smartwatch IMU stream, trained on seglearn's watch data with
some subjects held out, then exported as a bundle (the held-out subjects are written into it, and
`edge eval har-watch` scores the bundle on them).

The model reads z-scored samples (the bundle's normalisation) and outputs softmax(mean of the
per-sample logits so far): the cumulative decision of LMUFormer's early-exit curve, so a decision
exists from the first sample on and firms up as the recording goes on. Training draws random
crops of the training recordings (a stream may be joined at any moment) with a random watch
orientation, gain and playback speed, and scores the cross-entropy at every step of the crop.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge.quaternion import quat_from_rotvec, quat_to_rotmat
from edge.bundle import BUNDLE_DIR
from edge.export.bundle_export import export_bundle
from edge.tasks.classify.data import (WATCH_CLASS_NAMES, Recordings, load_basic_motions, load_watch,
                                      subject_folds)

from edge.models.fused_lif import fused_lif
from edge.models.heads import ClassifierHead
from edge.models.lmuformer import LMUFormer, SpikingLMUFormer
from edge.models.train import count_parameters, fit, parse_training_args

MODELS = {"lmuformer": LMUFormer, "spiking": SpikingLMUFormer}
# the spiking model underfits in 12 epochs; its LIF loops make long crops costly, so shorter crops, larger batches
DEFAULTS = {"lmuformer": {"epochs": 12, "batch": 16, "crop": 512}, "spiking": {"epochs": 24, "batch": 32, "crop": 256}}


def build_model(kind: str, channels: int, classes: int, dim: int, order: int, theta: float):
    head = ClassifierHead(dim, classes, running_mean=True)
    return MODELS[kind](channels, dim, head, depth=1, order=order, theta=theta)


def normalisation(data: Recordings) -> dict:
    """Per-channel mean and std over every training sample (written into the bundle)."""
    allx = np.concatenate(data.x).astype(np.float64)
    return {"mean": allx.mean(0).round(6).tolist(), "std": allx.std(0).round(6).tolist()}


def augment(x: np.ndarray, rng, rotate_deg: float, speed: float) -> np.ndarray:
    """Another watch, worn a little differently, on another subject: the IMU frame turned by up to
    `rotate_deg` about a random axis (acc and gyr together), a gain of ±10 %, a playback speed
    within ±`speed` (linear interpolation)."""
    axis = rng.standard_normal(3)
    angle = np.deg2rad(rng.uniform(0, rotate_deg))
    R = quat_to_rotmat(quat_from_rotvec(axis / np.linalg.norm(axis) * angle)).astype(np.float32)
    x = np.concatenate([x[:, :3] @ R.T, x[:, 3:] @ R.T], 1) * rng.uniform(0.9, 1.1)
    if speed > 0:
        rate = rng.uniform(1 - speed, 1 + speed)
        t = np.arange(0, len(x) - 1, rate)
        x = np.stack([np.interp(t, np.arange(len(x)), c) for c in x.T], 1)
    return x.astype(np.float32)


def crops(data: Recordings, norm: dict, rng, batch: int, length: int, rotate_deg: float, speed: float):
    """A batch (x (B, length, C) z-scored, y (B,)) of random crops; a crop starts at the recording's
    beginning one time in four, since that is how a replay or a fresh stream sees it."""
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    xs, ys = [], []
    for i in rng.integers(0, len(data), size=batch):
        x = augment(data.x[i], rng, rotate_deg, speed)
        if len(x) < length:  # sped up to fewer samples than the crop: stretched back (nearest sample)
            x = x[np.linspace(0, len(x) - 1, length).round().astype(int)]
        s = 0 if rng.random() < 0.25 else rng.integers(0, len(x) - length + 1)
        xs.append((x[s:s + length] - mean) / std)
        ys.append(data.y[i])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.array(ys))


def accuracy(model, data: Recordings, norm: dict) -> float:
    """Full-length accuracy of the parallel forward (the running mean at each recording's last sample)."""
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    hits = 0
    for x, y in zip(data.x, data.y):
        out, _ = model(torch.from_numpy((x - mean) / std)[None])
        hits += int(out[0, -1].argmax()) == int(y)
    return hits / len(data)


def train(model, data: Recordings, norm: dict, *, epochs: int, steps: int, batch: int, length: int, lr: float,
          rotate_deg: float, speed: float, seed: int, validation: Recordings | None = None,
          progress: bool = True) -> dict:
    """Fit with per-step cross-entropy on the running-mean logits over random crops."""
    def batches(epoch):
        g = np.random.default_rng(seed * 1000 + epoch)
        for _ in range(steps):
            yield crops(data, norm, g, batch, length, rotate_deg, speed)

    def loss_fn(m, x, y):
        logits, _ = m(x)  # (B, T, K): the running mean of the per-sample logits
        return F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(x.shape[1]))

    validate = (lambda m: accuracy(m, validation, norm)) if validation is not None else None
    return fit(model, batches, loss_fn, epochs=epochs, validate=validate, maximize=True, lr=lr,
               weight_decay=1e-2, clip=1.0, progress=progress)


def export(model, path, data: Recordings, norm: dict, *, name: str, held_out, parity_x, config: dict,
           provenance: dict) -> dict:
    """The bundle: probabilities out (softmax of the running mean), normalisation, class names."""
    model.eval()
    model.layers[-1].probabilities = True
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    parity = ((parity_x - mean) / std)[:, None, :]
    outputs = [{"name": c, "unit": "probability", "description": WATCH_CLASS_NAMES.get(c, c)} for c in data.classes]
    return export_bundle(
        model, path, input_size=len(data.channels), task="classification", name=name, inputs=data.channels,
        outputs=outputs, sample_rate_hz=data.rate_hz, normalisation=norm, parity_input=parity,
        parity_steps=len(parity), config=config, provenance=provenance,
        metrics={"dataset": data.name, "classes": list(data.classes),
                 "held_out_subjects": [int(s) for s in held_out] if held_out is not None else None})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="edge train har-watch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  edge train har-watch                          # the shipped bundle (fold 0: subjects 1 and 6 held out)\n"
               "  edge train har-watch --model spiking           # the shipped spiking bundle (fold 0)\n"
               "  for k in 0 1 2 3 4; do edge train har-watch --fold $k --out runs/har/fold$k.onnx; done\n"
               "  edge train har-watch --dataset basicmotions --theta 32 --out runs/har/basicmotions.onnx\n"
               "then: edge eval har-watch --bundles runs/har/*.onnx")
    ap.add_argument("--dataset", choices=["watch", "basicmotions"], default="watch",
                    help="seglearn's watch data (subject folds) or aeon's BasicMotions (its train split)")
    ap.add_argument("--model", choices=sorted(MODELS), default="lmuformer")
    ap.add_argument("--folds", type=int, default=5, help="grouped k-fold over the 10 watch subjects (default 5)")
    ap.add_argument("--fold", type=int, default=0, help="which fold's subjects are held out (default 0)")
    ap.add_argument("--out", default=None, help="bundle to write (default: edge/bundles/har-watch.onnx)")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--order", type=int, default=32, help="Legendre memory order")
    ap.add_argument("--theta", type=float, default=128.0, help="memory window, samples (128 = 2.6 s at 50 Hz)")
    ap.add_argument("--epochs", type=int, default=None, help="default 12; spiking 24")
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--batch", type=int, default=None, help="default 16; spiking 32")
    ap.add_argument("--crop", type=int, default=None, help="training crop, samples (default 512; spiking 256)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--rotate", type=float, default=20.0, help="augmentation: max watch rotation, degrees")
    ap.add_argument("--speed", type=float, default=0.15, help="augmentation: playback speed ± this fraction")
    ap.add_argument("--no-progress", action="store_true")
    args = parse_training_args(ap, argv, checkpoint=False)
    if not 2 <= args.folds <= 10:
        ap.error(f"--folds {args.folds}: the watch data has 10 subjects, so 2 to 10 folds")
    if not 0 <= args.fold < args.folds:
        ap.error(f"--fold {args.fold}: choose 0 to {args.folds - 1} (--folds {args.folds})")
    for key, value in DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    start = time.time()

    if args.dataset == "watch":
        data = load_watch()
        held_out = subject_folds(data.subject, args.folds)[args.fold]
        train_set = data.subset(np.flatnonzero(~np.isin(data.subject, held_out)))
        test_set = data.subset(np.flatnonzero(np.isin(data.subject, held_out)))
        print(f"watch: {len(train_set)} recordings to train on, subjects {sorted(set(train_set.subject.tolist()))}; "
              f"held out: subjects {list(held_out)} ({len(test_set)} recordings, never read while training)")
        name = "har-watch" + ("-spiking" if args.model == "spiking" else "")
    else:
        train_set, held_out = load_basic_motions("train"), None
        print(f"BasicMotions: {len(train_set)} training recordings (the test split is not read)")
        name = "har-basicmotions" + ("-spiking" if args.model == "spiking" else "")
    out = Path(args.out or BUNDLE_DIR / f"{name}.onnx")
    norm = normalisation(train_set)
    model = build_model(args.model, len(train_set.channels), len(train_set.classes), args.dim, args.order, args.theta)
    print(f"{args.model}: {count_parameters(model):,} parameters")
    crop = min(args.crop, min(len(x) for x in train_set.x))
    with fused_lif(model):  # spiking: the LIF loops in TorchScript (a no-op for the LMUFormer)
        run = train(model, train_set, norm, epochs=args.epochs, steps=args.steps_per_epoch, batch=args.batch,
                    length=crop, lr=args.lr, rotate_deg=args.rotate, speed=args.speed, seed=args.seed,
                    progress=not args.no_progress)
        with torch.no_grad():
            train_acc = accuracy(model.eval(), train_set, norm)
    wall = time.time() - start
    print(f"training recordings, full length: {train_acc:.3f} accuracy")
    config = {k: getattr(args, k) for k in ("model", "dim", "order", "theta", "epochs", "steps_per_epoch", "batch",
                                            "crop", "lr", "rotate", "speed", "folds", "fold")}
    meta = export(model, out, train_set, norm, name=name, held_out=held_out, parity_x=train_set.x[0][:1000],
                  config=config,
                  provenance={"command": " ".join(["edge train har-watch", *(argv or [])]),
                              "data": "seglearn 1.2.5 watch_dataset.npy (BSD-3, Burns et al. 2018)"
                                      if args.dataset == "watch" else "aeon 1.6.0 BasicMotions (UEA archive)",
                              "train_wall_s": round(wall, 1), "seed": args.seed, "epochs_run": run["epoch"],
                              "train_accuracy": round(train_acc, 4)})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); parity {json.dumps(meta['parity'])}")
    print(f"wall time {wall:.0f} s on {torch.get_num_threads()} torch thread(s)")
    return 0
