"""onnxruntime over any decoder exported in the common layout (numpy, onnxruntime and tokenizers only).

The layout (what Hugging Face's `optimum` exports and `edge train dialogue-lm` writes):
inputs  `input_ids` [batch, seq], `attention_mask` [batch, past + seq], `position_ids` [batch, seq],
        `past_key_values.{i}.key` / `.value` [batch, heads, past, head_dim] for each layer i;
outputs `logits` [batch, seq, vocab], `present.{i}.key` / `.value` [batch, heads, past + seq, head_dim]
        (past followed by the new entries).

A bring-your-own model needs its `tokenizer.json` (the `tokenizers` format) next to it as
`NAME.tokenizer.json` or `tokenizer.json`, or given explicitly. Our LM caches un-rotated keys and
renumbers cached positions from the attention mask, so eviction leaves no gaps in its positions; a
model that caches rotated keys keeps the positions it had when each key was written (gaps stay).
"""
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import BundleError, resolve, verify_file

LAYER = re.compile(r"past_key_values\.(\d+)\.key$")


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Shape:
    layers: int
    heads: int
    head_dim: int
    vocab: int

    @property
    def kv_bytes_per_token(self) -> int:  # keys and values of every layer, float32
        return 2 * self.layers * self.heads * self.head_dim * 4


class Decoder:
    """One onnxruntime session over a decoder, with its tokenizer and its cache shape."""

    def __init__(self, model, tokenizer=None, threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = resolve(model)
        try:
            data = Path(self.path).read_bytes()
        except OSError as e:
            raise BundleError(self.path, f"cannot read: {e.strerror}") from None
        verify_file(self.path, data)            # the weights' hashes, and every weight finite
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise BundleError(self.path, f"onnxruntime cannot load it: {str(e).splitlines()[0][:200]}") from None
        self.fingerprint = hashlib.sha256(data).hexdigest()[:16]
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get("edge", "{}"))
        self.shape = self._shape()
        tok_path = self._tokenizer_path(tokenizer)
        try:
            self.tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise BundleError(tok_path, f"not a tokenizers JSON file: {str(e)[:200]}") from None
        if self.tokenizer.get_vocab_size() > self.shape.vocab:
            raise BundleError(tok_path, f"tokenizer has {self.tokenizer.get_vocab_size()} tokens, the model's "
                                        f"logits only {self.shape.vocab}: not this model's tokenizer")
        bos = self.meta.get("bos")
        self.bos = [self.tokenizer.token_to_id(bos)] if bos and self.tokenizer.token_to_id(bos) is not None else []

    def _shape(self) -> Shape:
        inputs = {i.name: i for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask", "position_ids"} - set(inputs)
        layers = sorted(int(m.group(1)) for name in inputs if (m := LAYER.match(name)))
        if missing or not layers or layers != list(range(len(layers))):
            raise BundleError(self.path, "not a decoder in the common layout (needs input_ids, attention_mask, "
                                         "position_ids and past_key_values.{i}.key/value for i = 0..L-1)")
        _, heads, _, head_dim = inputs["past_key_values.0.key"].shape
        vocab = next((o.shape[-1] for o in self.session.get_outputs() if o.name == "logits"), None)
        if not all(isinstance(d, int) for d in (heads, head_dim, vocab)):
            raise BundleError(self.path, "heads, head_dim and vocab must be fixed sizes in the graph")
        if inputs["past_key_values.0.key"].type != "tensor(float)":
            raise BundleError(self.path, "only float32 caches are supported")
        self.outputs = ["logits"] + [f"present.{i}.{kv}" for i in layers for kv in ("key", "value")]
        absent = set(self.outputs) - {o.name for o in self.session.get_outputs()}
        if absent:
            raise BundleError(self.path, f"not a decoder in the common layout: no output {sorted(absent)[0]}")
        return Shape(len(layers), heads, head_dim, vocab)

    def _tokenizer_path(self, given) -> Path:
        if given:
            return Path(given)
        model = Path(self.path)
        candidates = ([model.with_name(self.meta["tokenizer"])] if self.meta.get("tokenizer") else []) + \
                     [model.with_name(model.stem + ".tokenizer.json"), model.with_name("tokenizer.json")]
        for c in candidates:
            if c.exists():
                return c
        raise BundleError(self.path, f"no tokenizer: looked for {', '.join(str(c) for c in candidates)}")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list) -> tuple:
        """ids, positions [batch, m]; mask [batch, S + m]; past: per layer (key, value) [batch, H, S, D].
        Returns logits [batch, m, V] and present: per layer (key, value) [batch, H, S + m, D]."""
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        for i, (k, v) in enumerate(past):
            feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = k, v
        out = self.session.run(self.outputs, feed)
        return out[0], list(zip(out[1::2], out[2::2]))
