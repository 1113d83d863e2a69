"""A tiny random-weight dialogue LM exported with its tokenizer, for the dialogue tests (seconds to build)."""
import random

import torch

from edge.models.training.dialogue_data import grocery_episode
from edge.models.dialogue_lm import DialogueLM, export_onnx
from edge.models.training.dialogue import BOS, train_tokenizer


def build_tiny_bundle(folder, layers: int = 2):
    """folder/tiny.onnx + folder/tiny.tokenizer.json; returns (path, the torch LM)."""
    rng = random.Random(0)
    tok = train_tokenizer([grocery_episode(rng, 5, ask_back=True).text() for _ in range(200)], 400)
    tok.save(str(folder / "tiny.tokenizer.json"))
    torch.manual_seed(0)
    lm = DialogueLM(tok.get_vocab_size(), dim=32, layers=layers, heads=2).eval()
    path = folder / "tiny.onnx"
    export_onnx(lm, path, {"schema": "edge.dialogue-lm/1", "task": "dialogue-lm", "tokenizer": "tiny.tokenizer.json",
                           "bos": BOS, "cache_slots": 64, "layers": layers, "heads": 2, "head_dim": 16})
    return path, lm
