"""A spiking and a non-spiking LMUFormer of the same size, trained the same way on the same watch
recordings, then measured side by side by bench/har_int8.py: held-out accuracy (fp32 and int8),
spikes per neuron per step, MACs vs accumulates per step, energy per inference.

    python bench/spiking_vs_dense.py                     # dim 16, order 16: ~10 min on 2 shared cores
    python bench/spiking_vs_dense.py --dim 32 --order 32 --epochs 12 --steps 40   # the shipped size

Training is `edge train har-watch`'s (models/training/har.py: random crops, rotation/gain/speed
augmentation, per-step cross-entropy on the running-mean logits), with the same seed, budget and
held-out subjects (fold 0: 1 and 6) for both kinds; the bundles go to --out.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge.models.fused_lif import fused_lif
from edge.models.training.har import build_model, export, normalisation, train
from edge.models.train import count_parameters, seed_everything
from edge.tasks.classify.data import load_watch, subject_folds

sys.path.insert(0, str(Path(__file__).parent))
from har_int8 import main as report  # noqa: E402  (the measuring half lives there)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--order", type=int, default=16)
    ap.add_argument("--theta", type=float, default=128.0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25, help="batches per epoch")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--out", default="runs/spiking-vs-dense", help="folder for the two bundles")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = load_watch()
    held_out = subject_folds(data.subject, 5)[0]
    train_set = data.subset(np.flatnonzero(~np.isin(data.subject, held_out)))
    norm = normalisation(train_set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("lmuformer", "spiking"):
        seed_everything(0)
        model = build_model(kind, len(train_set.channels), len(train_set.classes), args.dim, args.order, args.theta)
        start = time.time()
        with fused_lif(model):
            train(model, train_set, norm, epochs=args.epochs, steps=args.steps, batch=16, length=args.crop, lr=3e-3,
                  rotate_deg=20.0, speed=0.15, seed=0)
        path = out / f"har-{kind}-d{args.dim}.onnx"
        config = {"model": kind, "dim": args.dim, "order": args.order, "theta": args.theta, "epochs": args.epochs,
                  "steps_per_epoch": args.steps, "crop": args.crop}
        export(model, path, train_set, norm, name=path.stem, held_out=held_out, parity_x=train_set.x[0][:500],
               config=config, provenance={"command": "python bench/spiking_vs_dense.py " + " ".join(argv or sys.argv[1:]),
                                          "train_wall_s": round(time.time() - start, 1)})
        print(f"{kind}: {count_parameters(model):,} parameters, trained in {time.time() - start:.0f} s -> {path}",
              file=sys.stderr)
        paths.append(path)
    report(paths)


if __name__ == "__main__":
    main()
