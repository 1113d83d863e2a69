"""`edge train imu-attitude`: tune the attitude filter and train its learned correction on the 19
BROAD training trials (the 11 test trials are never read), then export the shipped bundle.

1. The filter's two data-dependent constants (τ_acc, the motion-bias gain) are chosen by a small grid
   on the training trials, run through the Numba engine (the filter has no gradients).
2. Augmented copies of the training trials (random IMU-frame rotations, gyro bias, noise, and copies
   decimated to 50–100 Hz then interpolated back, as the runtime does for slow recordings) are run
   through the tuned filter once.
   Simulated recordings with exact truth (`--synthetic`, edge.firmware_sim.imu) are added to them.
3. The GRU correction is trained on random windows of those copies (burn-in unscored), with early
   stopping on 4 held-out training trials.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from edge.quaternion import quat_conjugate, quat_multiply, quat_rotate
from edge.tasks.attitude.metric import inclination_rmse
from edge.bundle import BUNDLE_DIR
from edge.engine.numba_engine import NumbaExecutor
from edge.export.bundle_export import export_bundle
from edge.export.lower import lower
from edge.io.recordings import read_recording
from edge.io.datasets import broad_root, broad_trials

from edge.models.attitude import CORRECTORS, AttitudeFilter, LearnedAttitude, quat_conj, quat_mul
from edge.models.train import count_parameters, fit, parse_training_args

RATE = 285.714
VALIDATION = ("04", "15", "26", "33")  # held out from the training trials for early stopping
CHANNELS = [("acc_x", "m/s^2"), ("acc_y", "m/s^2"), ("acc_z", "m/s^2"),
            ("gyr_x", "rad/s"), ("gyr_y", "rad/s"), ("gyr_z", "rad/s")]


def load_trial(path):
    rec = read_recording(path)
    return {"name": Path(path).stem, "x": rec.x[:, :6].astype(np.float32), "quat": rec.reference,
            "scored": rec.scored.astype(bool)}


def run_filter(filter_model: AttitudeFilter, x: np.ndarray) -> np.ndarray:
    """The filter's outputs (T, 7) for one recording (T, 6), on the Numba engine."""
    program, weights, state = lower(filter_model.eval(), 6)
    ex = NumbaExecutor(program, weights, state)
    return ex.block(np.ascontiguousarray(x[:, None, :]), ex.init_state(1))[:, 0].copy()


def filter_score(config, trials) -> float:
    f = AttitudeFilter(RATE, **config)
    return float(np.mean([inclination_rmse(run_filter(f, t["x"])[:, :4], t["quat"], t["scored"]) for t in trials]))


def random_quaternion(rng):
    q = rng.standard_normal(4)
    return q / np.linalg.norm(q)


def augment(trial, rng):
    """A copy seen by another IMU: a random mounting rotation, a gyro bias, noise, and sometimes a
    lower sample rate brought back to the model's rate by linear interpolation."""
    q0 = random_quaternion(rng)
    acc = quat_rotate(q0, trial["x"][:, :3].astype(np.float64))
    gyr = quat_rotate(q0, trial["x"][:, 3:].astype(np.float64)) + rng.uniform(-0.01, 0.01, 3)
    acc += rng.normal(0, 0.02, acc.shape)
    gyr += rng.normal(0, 0.002, gyr.shape)
    if rng.random() < 0.3:
        step = RATE / rng.uniform(50, 100)
        t = np.arange(len(acc))
        coarse = np.arange(0, len(acc) - 1, step)
        acc = np.stack([np.interp(t, coarse, np.interp(coarse, t, a)) for a in acc.T], 1)
        gyr = np.stack([np.interp(t, coarse, np.interp(coarse, t, g)) for g in gyr.T], 1)
    quat = quat_multiply(trial["quat"], quat_conjugate(q0))  # the reference of the remounted sensor
    return {"name": trial["name"] + "+aug", "x": np.concatenate([acc, gyr], 1).astype(np.float32),
            "quat": quat, "scored": trial["scored"]}


def simulated(seed, rng):
    """A simulated IMU with exact truth (firmware_sim): rests, rotation and translation at random
    intensities, and BROAD-like sensor errors."""
    from edge.firmware_sim.imu import synthetic_imu
    rec = synthetic_imu(120.0, rate_hz=RATE, seed=1000 + seed, rests=3, rot_intensity=rng.uniform(0.5, 2.0),
                        lin_intensity=rng.uniform(0.5, 3.0))
    return {"name": f"synthetic{seed}", "x": rec.x.astype(np.float32), "quat": rec.reference,
            "scored": np.ones(len(rec.x), bool)}


def inclination_loss(q_est, q_ref):
    """Mean squared inclination error (deg²) over rows with a reference; smooth at zero error."""
    e = quat_mul(q_est, quat_conj(q_ref))
    tilt = 2 * torch.atan2(torch.sqrt(e[..., 1] ** 2 + e[..., 2] ** 2 + 1e-12), torch.sqrt(e[..., 0] ** 2 + e[..., 3] ** 2))
    return torch.rad2deg(tilt) ** 2


def windows(trials, rng, batch, length):
    """A batch of (x, filtered, reference, weight) windows, drawn in proportion to trial length."""
    sizes = np.array([len(t["x"]) - length for t in trials], float)
    picks = rng.choice(len(trials), size=batch, p=sizes / sizes.sum())
    xs, fs, qs, ws = [], [], [], []
    for i in picks:
        t = trials[i]
        s = rng.integers(0, len(t["x"]) - length)
        xs.append(t["x"][s:s + length])
        fs.append(t["filtered"][s:s + length])
        q = t["quat"][s:s + length]
        ok = ~np.isnan(q).any(1)
        ws.append(ok.astype(np.float32))
        qs.append(np.where(ok[:, None], q, [1.0, 0, 0, 0]))
    return tuple(torch.from_numpy(np.stack(a).astype(np.float32)) for a in (xs, fs, qs, ws))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="edge train imu-attitude", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="BROAD folder (default: ../shared/data/broad)")
    ap.add_argument("--out", default=str(BUNDLE_DIR / "imu-attitude.onnx"), help="bundle to write")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps-per-epoch", type=int, default=60)
    ap.add_argument("--copies", type=int, default=3, help="augmented copies of each training trial")
    ap.add_argument("--synthetic", type=int, default=4, help="simulated 2-minute recordings added to training")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--corrector", choices=sorted(CORRECTORS), default="lstm",
                    help="the zoo layer that learns the correction (held-out training trials: lstm 0.512°, "
                         "gru 0.525°, lmu 0.545°, filter alone 0.596°)")
    ap.add_argument("--window", type=int, default=1536, help="training window, samples")
    ap.add_argument("--burn-in", type=int, default=512, help="unscored samples at each window's start")
    args = parse_training_args(ap, argv)
    start = time.time()
    rng = np.random.default_rng(args.seed)
    root = broad_root(args.data)
    paths = broad_trials(root, split="train")
    trials = [load_trial(p) for p in paths]
    train = [t for t in trials if t["name"][:2] not in VALIDATION]
    val = [t for t in trials if t["name"][:2] in VALIDATION]
    print(f"BROAD training trials: {len(train)} to train on, {len(val)} held out ({', '.join(VALIDATION)}); "
          "the test trials are not read")

    grid = [dict(tau_acc=tau, k_bias=kb, rest_gyr=rg) for tau in (2.5, 3.0, 3.5) for kb in (0.01, 0.02, 0.03, 0.05)
            for rg in (0.02, 0.035)]
    scores = []
    for cfg in grid:
        scores.append(filter_score(cfg, train))
        print(f"  filter τ_acc={cfg['tau_acc']:.1f} s, k_bias={cfg['k_bias']:.2f}, rest below {cfg['rest_gyr']} rad/s: "
              f"{scores[-1]:.3f}° mean on training trials")
    config = grid[int(np.argmin(scores))]
    model = LearnedAttitude(RATE, hidden=args.hidden, corrector=args.corrector, **config)
    print(f"filter: {config}; "
          f"{count_parameters(model):,} parameters in the correction")

    data = [dict(t) for t in train]
    for _ in range(args.copies):
        data += [augment(t, rng) for t in train]
    data += [simulated(seed, rng) for seed in range(args.synthetic)]
    for t in data + val:
        t["filtered"] = run_filter(model.filter, t["x"])
    filter_val = np.mean([inclination_rmse(t["filtered"][:, :4], t["quat"], t["scored"]) for t in val])
    print(f"filter alone on the held-out trials: {filter_val:.3f}° mean")

    def batches(epoch):
        g = np.random.default_rng(args.seed * 1000 + epoch)
        for _ in range(args.steps_per_epoch):
            yield windows(data, g, 32, args.window)

    def loss_fn(m, batch, _):
        x, f, q, w = batch
        y, _ = m(x, filtered=f)
        err = inclination_loss(y, q)[:, args.burn_in:]
        w = w[:, args.burn_in:]
        return (err * w).sum() / w.sum().clamp_min(1.0)

    def validate(m):
        errs = []
        for t in val:
            y, _ = m(torch.from_numpy(t["x"])[None], filtered=torch.from_numpy(t["filtered"])[None])
            errs.append(inclination_rmse(y[0].numpy(), t["quat"], t["scored"]))
        return float(np.mean(errs))

    run = fit(model, lambda e: ((b, None) for b in batches(e)), loss_fn, epochs=args.epochs, validate=validate,
              lr=2e-3, clip=1.0, patience=4, checkpoint=args.checkpoint)
    learned_val = run["best_metric"]
    print(f"held-out trials: filter {filter_val:.3f}°, filter + {args.corrector} correction {learned_val:.3f}°")

    x_parity = np.ascontiguousarray(val[0]["x"][20000:22000, None, :])
    wall = time.time() - start
    meta = export_bundle(
        model.eval(), args.out, input_size=6, task="attitude", name="imu-attitude",
        inputs=[{"name": n, "unit": u} for n, u in CHANNELS], outputs=["qw", "qx", "qy", "qz"],
        sample_rate_hz=RATE, parity_input=x_parity, parity_steps=2000,
        config={"filter": config, "corrector": args.corrector, "hidden": args.hidden, "max_correction_deg": 5.0},
        provenance={"command": "edge train imu-attitude", "data": "BROAD (CC BY 4.0), 19 training trials",
                    "train_wall_s": round(wall, 1), "seed": args.seed, "epochs_run": run["epoch"]},
        metrics={"heldout_trials": list(VALIDATION), "heldout_filter_deg": round(float(filter_val), 4),
                 "heldout_learned_deg": round(float(learned_val), 4)})
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB); parity {json.dumps(meta['parity'])}")
    print(f"wall time {wall:.0f} s on {torch.get_num_threads()} torch thread(s)")
    return 0
