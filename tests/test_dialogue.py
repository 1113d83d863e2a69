"""The tiny dialogue LM (issue 7): the KV-cache step face against the parallel forward, position
renumbering after eviction, and the ONNX export (run by edge.tasks.dialogue) against torch."""
import numpy as np
import pytest
import torch

from edge.models.dialogue_lm import DialogueLM


def feed_chunks(lm, ids, chunks):
    """Run `ids` [1, T] through the step face in chunks, the cache growing by each chunk's entries."""
    _, past = lm.init_state(1)
    n, out = 0, []
    for m in chunks:
        logits, past = lm.step(ids[:, n:n + m], torch.ones(1, n + m, dtype=torch.long),
                               torch.arange(n, n + m)[None], past)
        out.append(logits)
        n += m
    return torch.cat(out, dim=1), past


@torch.no_grad()
def test_step_in_chunks_equals_parallel_forward():
    torch.manual_seed(0)
    lm = DialogueLM(vocab=97, dim=32, layers=2, heads=4).eval()
    ids = torch.randint(0, 97, (1, 40))
    stepped, _ = feed_chunks(lm, ids, [1, 7, 1, 13, 18])
    assert torch.allclose(stepped, lm(ids), atol=1e-4)


@torch.no_grad()
def test_evicted_cache_is_renumbered_like_the_compacted_sequence():
    """With one layer a cached key/value depends on its token alone, so after an eviction (the kept slots
    compacted, as edge.tasks.dialogue does) the next tokens must see exactly what a forward over the kept tokens
    sees: positions are ranks among the kept slots, and a key's smeared predecessor is the previous kept one."""
    torch.manual_seed(1)
    lm = DialogueLM(vocab=61, dim=32, layers=1, heads=2).eval()
    ids = torch.randint(0, 61, (1, 30))
    _, past = feed_chunks(lm, ids[:, :20], [20])
    kept = torch.tensor([0, 1, 2, 3, 7, 8, 15, 19])
    past = [(k[:, :, kept], v[:, :, kept]) for k, v in past]
    logits, _ = lm.step(ids[:, 20:], torch.ones(1, len(kept) + 10, dtype=torch.long),
                        torch.arange(len(kept), len(kept) + 10)[None], past)
    reference = lm(torch.cat([ids[:, kept], ids[:, 20:]], dim=1))[:, len(kept):]
    assert torch.allclose(logits, reference, atol=1e-4)


def test_onnx_logits_equal_torch(tiny_bundle):
    """The exported decoder, run by edge.tasks.dialogue's Memory turn by turn, against the torch forward."""
    from edge.tasks.dialogue.decoder import Decoder
    from edge.tasks.dialogue.memory import Memory

    path, lm = tiny_bundle
    decoder = Decoder(path)
    ids = torch.randint(0, lm.config["vocab"], (1, 37), generator=torch.Generator().manual_seed(2))
    memory, logps = Memory(decoder.shape, 64), []
    for a, b in ((0, 5), (5, 6), (6, 30), (30, 37)):
        logps.append(memory.feed(decoder, ids[0, a:b].numpy(), turn=a))
    with torch.no_grad():
        reference = torch.log_softmax(lm(ids)[0].double(), -1).numpy()
    np.testing.assert_allclose(np.vstack(logps), reference, atol=1e-4)


def test_export_records_its_parity_and_metadata(tiny_bundle):
    import json

    import onnx
    path, _ = tiny_bundle
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["edge"])
    assert meta["task"] == "dialogue-lm" and meta["tokenizer"] == "tiny.tokenizer.json"
    assert meta["parity"]["onnxruntime_vs_torch_max_abs_logit"] < 1e-4


@pytest.mark.slow
def test_training_command_writes_a_bundle_the_runtime_reads(tmp_path):
    from edge.cli import main
    from edge.tasks.dialogue.decoder import Decoder
    out = tmp_path / "lm.onnx"
    assert main(["train", "dialogue-lm", "--epochs", "1", "--steps-per-epoch", "3", "--dim", "32", "--heads", "2",
                 "--length", "64", "--batch", "2", "--dev-episodes", "2", "--out", str(out)]) == 0
    decoder = Decoder(out)
    assert decoder.shape.layers == 2 and decoder.shape.head_dim == 16
    assert decoder.encode(" lemons") and decoder.bos  # the tokenizer beside it, with its <|bos|>


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from dialogue_tiny import build_tiny_bundle
    return build_tiny_bundle(tmp_path_factory.mktemp("dialogue"))
