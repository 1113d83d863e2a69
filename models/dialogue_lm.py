"""A tiny decoder LM whose streaming state is a fixed-capacity KV cache (issue 7).

Two faces, as every zoo layer:
- `forward(ids[B,T]) -> logits[B,T,V]`: the parallel, causal training face (positions 0..T-1).
- `step(ids[B,T], attention_mask[B,S+T], position_ids[B,T], past) -> (logits, present)`: the streaming
  face, in the common decoder layout that the ONNX export keeps (`past`/`present`: one (key, value)
  pair per layer, each [B, heads, S, head_dim]; present = past followed by the T new entries).

The cache holds **un-rotated** keys. RoPE is applied at attention time, and a cached key's position is
its rank among the valid slots: `cumsum(attention_mask) - 1`. So when a memory policy evicts slots
(or just clears their mask bits) the survivors are renumbered 0..n-1 inside the cache, StreamingLLM's
and SirLLM's "position = index in the cache" scheme, and the model never sees a position beyond its
cache capacity however long the dialogue runs. Queries take their positions from `position_ids`
(= the number of valid slots before them), so they agree with the keys.

Keys are "smeared" (each mixed with the key of the slot before it, see `smear`) at attention time too,
so after an eviction a key's predecessor is the previous token *kept*. A masked slot passes nothing
on, so edge.tasks.dialogue passes the cache compacted: the valid slots, in order, and nothing else.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotate the first half of x[B, H, T, D] by angles pos[B, T] · θ_k (pairs (k, k + D/4)); the second
    half is left position-free ("partial rotary", as GPT-NeoX), so a head can match keys by content alone."""
    rot, free = x.split(x.shape[-1] // 2, dim=-1)
    quarter = rot.shape[-1] // 2
    inv_freq = 10000.0 ** (-torch.arange(quarter, dtype=x.dtype) / quarter)  # [D/4]
    angle = pos.to(x.dtype)[:, None, :, None] * inv_freq                      # [B, 1, T, D/4]
    cos, sin = angle.cos(), angle.sin()
    a, b = rot[..., :quarter], rot[..., quarter:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos, free], dim=-1)


def smear(keys: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """k'_j = σ(a)·k_j + (1 − σ(a))·k_{j−1} per head along the sequence of keys[B, H, S, D] (k_{−1} = 0).
    "Smeared keys" (Olsson et al. 2022): a key carries its predecessor, so one attention layer can
    find "the token after the last X" (induction, recall from context), which this model must learn fast."""
    a = torch.sigmoid(mix)[None, :, None, None]
    return a * keys + (1 - a) * F.pad(keys, (0, 0, 1, 0))[:, :, :-1]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        # Start half the heads on the previous token's key (σ(−2) = 0.12 of their own), half on their own, and
        # W_K = W_Q: a query then matches keys of the same content from the first step, so the copy skill
        # does not have to escape the long plateau of an induction head learnt from scratch.
        self.mix = nn.Parameter(torch.tensor([-2.0 if h % 2 == 0 else 2.0 for h in range(heads)]))
        with torch.no_grad():
            self.qkv.weight[dim:2 * dim] = self.qkv.weight[:dim]

    def split(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each [B, T, dim]
        shape = (x.shape[0], x.shape[1], self.heads, self.head_dim)
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]

    def merge(self, y):
        return self.proj(y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1))

    def forward(self, x):
        q, k, v = self.split(x)
        pos = torch.arange(x.shape[1]).expand(x.shape[0], -1)
        y = F.scaled_dot_product_attention(rope(q, pos), rope(smear(k, self.mix), pos), v, is_causal=True)
        return self.merge(y)

    def step(self, x, key_pos, query_pos, allowed, valid, past_k, past_v):
        """allowed[B, 1, T, S+T]: which cached/new keys each new query may attend to; valid[B, S+T]: the mask."""
        q, k, v = self.split(x)
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # [B, H, S+T, D]
        smeared = smear(keys * valid[:, None, :, None], self.mix)  # a masked slot passes nothing on
        scores = rope(q, query_pos) @ rope(smeared, key_pos).transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        return self.merge(scores.softmax(-1) @ values), keys, values


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def step(self, x, key_pos, query_pos, allowed, valid, past_k, past_v):
        a, keys, values = self.attn.step(self.ln1(x), key_pos, query_pos, allowed, valid, past_k, past_v)
        x = x + a
        return x + self.mlp(self.ln2(x)), keys, values


class DialogueLM(nn.Module):
    def __init__(self, vocab: int, dim: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.config = {"vocab": vocab, "dim": dim, "layers": layers, "heads": heads}
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=0.02)

    @property
    def heads(self) -> int:
        return self.config["heads"]

    @property
    def head_dim(self) -> int:
        return self.config["dim"] // self.config["heads"]

    def logits(self, x):
        return self.ln_f(x) @ self.embed.weight.T  # tied embedding: fewer parameters, same quality here

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.logits(x)

    def init_state(self, batch: int, slots: int = 0):
        """An empty cache: past of `slots` masked-out entries per layer (all zeros) and a zero mask."""
        zeros = torch.zeros(batch, self.heads, slots, self.head_dim)
        return torch.zeros(batch, slots, dtype=torch.long), [(zeros, zeros) for _ in self.blocks]

    def step(self, ids, attention_mask, position_ids, past):
        past_len, new = past[0][0].shape[2], ids.shape[1]
        key_pos = attention_mask.cumsum(-1) - 1  # [B, S+T]: rank among valid slots
        # query i sits at cache index S+i: it sees valid keys at or before it
        causal = torch.arange(past_len + new)[None, :] <= (past_len + torch.arange(new))[:, None]  # [T, S+T]
        allowed = (causal[None] & (attention_mask[:, None, :] > 0))[:, None]  # [B, 1, T, S+T]
        valid = attention_mask.to(torch.float32)
        x, present = self.embed(ids), []
        for block, (pk, pv) in zip(self.blocks, past):
            x, keys, values = block.step(x, key_pos, position_ids, allowed, valid, pk, pv)
            present.append((keys, values))
        return self.logits(x), present


class DecoderStep(nn.Module):
    """The step face with flat arguments, as the ONNX export names them (common decoder layout)."""

    def __init__(self, lm: DialogueLM):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, position_ids, *flat_past):
        past = list(zip(flat_past[0::2], flat_past[1::2]))
        logits, present = self.lm.step(input_ids, attention_mask, position_ids, past)
        return (logits, *[t for kv in present for t in kv])


def io_names(layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for i in range(layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


@torch.no_grad()
def parity(lm: DialogueLM, onnx_bytes: bytes, chunks=(5, 1, 7)) -> float:
    """Max |logit| difference between onnxruntime and torch, feeding random tokens in chunks into a growing
    compact cache, as edge.tasks.dialogue does."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    _, past = lm.init_state(1)
    gen, worst, n = torch.Generator().manual_seed(0), 0.0, 0
    for m in chunks:
        ids = torch.randint(0, lm.config["vocab"], (1, m), generator=gen)
        mask, pos = torch.ones(1, n + m, dtype=torch.long), torch.arange(n, n + m)[None]
        logits, present = lm.step(ids, mask, pos, past)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": pos.numpy()}
        for i, (k, v) in enumerate(past):
            feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = k.numpy(), v.numpy()
        worst = max(worst, float(np.abs(session.run(["logits"], feed)[0] - logits.numpy()).max()))
        past, n = present, n + m
    return worst


def export_onnx(lm: DialogueLM, path, meta: dict) -> None:
    """Write the step face as ONNX in the common decoder layout, with `meta` as the edge metadata."""
    import io

    import onnx

    from edge.bundle import write_metadata
    from edge.io.atomic import atomic_write

    lm = lm.eval()
    layers = lm.config["layers"]
    inputs, outputs = io_names(layers)
    ids = torch.zeros(1, 3, dtype=torch.long)
    mask, past = lm.init_state(1, 2)
    mask = torch.cat([mask, torch.ones(1, 3, dtype=torch.long)], dim=1)
    args = (ids, mask, torch.arange(3)[None], *[t for kv in past for t in kv])
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    dynamic.update({n: {0: "batch", 2: "past"} for n in inputs[3:]})
    dynamic.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(DecoderStep(lm), args, buf, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {**meta, "parity": {"onnxruntime_vs_torch_max_abs_logit": parity(lm, buf.getvalue())}}
    write_metadata(proto, meta)
    onnx.checker.check_model(proto)
    atomic_write(path, proto.SerializeToString())
