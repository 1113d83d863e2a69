"""`edge demo`: a tour of the zoo. Each model is built, its two faces compared, exported as a
bundle and streamed on both engines; one line per model says how they agree and how fast."""
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import edge
from edge.export.bundle_export import export_bundle, torch_stream

from edge.models import (GRU, LMU, LSTM, S4D, ClassifierHead, ForecastHead, LMUFormer, Pointwise, QuaternionHead,
               RecurrentLMU, SpikingLMUFormer, Stack)


def zoo():
    return {
        "lstm-attitude": Stack(LSTM(6, 32), QuaternionHead(32)),
        "gru-attitude": Stack(GRU(6, 32), QuaternionHead(32)),
        "lmu-forecast": Stack(LMU(6, 64, order=32, theta=100.0), ForecastHead(64, horizon=4, channels=6)),
        "recurrent-lmu": Stack(RecurrentLMU(6, 32, order=16, theta=50.0), ForecastHead(32, 1, 6)),
        "s4d-forecast": Stack(Pointwise(nn.Linear(6, 32)), S4D(32, 32), ForecastHead(32, 4, 6)),
        "lmuformer-classify": LMUFormer(6, 32, ClassifierHead(32, 7, running_mean=True), depth=2, order=32, theta=64.0),
        "spiking-lmuformer": SpikingLMUFormer(6, 32, ClassifierHead(32, 7, running_mean=True), order=32, theta=64.0),
    }


def run(args) -> int:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="edge-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    t = np.arange(args.steps)[:, None, None] / 100.0
    x = (np.sin(t * np.arange(1, 7)) + 0.1 * np.random.default_rng(0).standard_normal((args.steps, 1, 6)))
    x = x.astype(np.float32)
    rows = []
    for name, model in tqdm(zoo().items(), desc="zoo", unit="model"):
        model.eval()
        with torch.no_grad():
            y_par, _ = model(torch.from_numpy(x[:300, 0])[None])
        y_step = torch_stream(model, x[:300])[:, 0]
        faces = float(np.abs(y_par[0].numpy() - y_step).max())
        path = out / f"{name}.onnx"
        export_bundle(model, path, input_size=6, name=name, parity_steps=300, parity_input=x[:300])
        row = [name, faces]
        for engine in ("numba", "onnxruntime"):
            m = edge.load(path, engine=engine)
            state = m.init_state(1)
            m.step(x[0], state)  # first call pays any compilation
            state = m.init_state(1)
            start = time.perf_counter()
            y = m.block(x, state)
            row += [1e6 * (time.perf_counter() - start) / args.steps, float(np.abs(y[:300, 0] - y_step).max())]
        rows.append(row)
    print(f"\nbundles in {out}\n")
    print(f"{'model':<20} {'forward vs step':>15} {'numba µs/sample':>16} {'vs torch':>9} {'ORT µs/sample':>14} {'vs torch':>9}")
    for name, faces, nb_us, nb_err, ort_us, ort_err in rows:
        print(f"{name:<20} {faces:>15.1e} {nb_us:>16.2f} {nb_err:>9.1e} {ort_us:>14.2f} {ort_err:>9.1e}")
    print("\n'forward vs step': max |parallel forward − streaming step| over 300 samples (torch);"
          "\n'vs torch': max |engine − torch step|. Inspect one: edge inspect " + str(out / "lmu-forecast.onnx"))
    return 0
