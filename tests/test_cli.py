import json
import subprocess
import sys

import pytest
import torch

from edge.cli import main
from edge.export.bundle_export import export_bundle
from edge.models import LSTM, QuaternionHead, Stack


@pytest.fixture(scope="module")
def lstm_bundle(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli") / "lstm.onnx"
    inputs = [{"name": n, "unit": u} for n, u in [("acc_x", "m/s^2"), ("acc_y", "m/s^2"), ("acc_z", "m/s^2"),
                                                 ("gyr_x", "rad/s"), ("gyr_y", "rad/s"), ("gyr_z", "rad/s")]]
    export_bundle(Stack(LSTM(6, 16), QuaternionHead(16)).eval(), path, input_size=6, task="attitude",
                  name="tiny-attitude", inputs=inputs, outputs=["qw", "qx", "qy", "qz"], sample_rate_hz=285.714,
                  parity_steps=100)
    return path


def test_inspect_shows_what_the_bundle_holds(lstm_bundle, capsys):
    assert main(["inspect", str(lstm_bundle)]) == 0
    out = capsys.readouterr().out
    assert "tiny-attitude / attitude" in out
    assert "acc_x [m/s^2]" in out and "gyr_z [rad/s]" in out
    assert "285.714 Hz" in out
    assert "0.h" in out and "0.c" in out and "[16]" in out
    # an LSTM(6,16) step is 4·16·(6+16) MACs, the head 16·4, the normalisation 4
    assert f"{4 * 16 * 22 + 64 + 4:,} MACs" in out
    assert "lstm → dense → l2norm" in out


def test_inspect_json(lstm_bundle, capsys):
    assert main(["inspect", str(lstm_bundle), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"]["schema"] == "edge.bundle/1"
    assert doc["cost"]["state_floats"] == 32
    assert doc["cost"]["parameters"] == 4 * 16 * 22 + 4 * 16 + 16 * 4 + 4


def test_bad_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.onnx" in err and "not an ONNX model" in err


@pytest.mark.parametrize("args", [[], ["inspect"], ["bench"], ["demo"]])
def test_help_teaches(args):
    r = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "usage: edge" in r.stdout
    if not args:
        assert "examples:" in r.stdout and "inspect" in r.stdout and "bench" in r.stdout


def test_inspect_shows_a_dialogue_decoder_from_its_graph_and_metadata(capsys):
    import numpy as np
    import onnx

    from edge.bundle import BUNDLE_DIR
    assert main(["inspect", "dialogue-lm", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = onnx.load(str(BUNDLE_DIR / "dialogue-lm.onnx"))
    key = next(i for i in model.graph.input if i.name == "past_key_values.0.key")
    layers = sum(i.name.endswith(".key") for i in model.graph.input)
    heads, head_dim = (d.dim_value for d in key.type.tensor_type.shape.dim[1:4:2])
    assert info["kv_bytes_per_slot"] == 2 * layers * heads * head_dim * 4
    assert info["parameters"] == sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert main(["inspect", "dialogue-lm"]) == 0
    assert f"{info['kv_bytes_per_slot']:,} bytes of keys and values per slot" in capsys.readouterr().out
