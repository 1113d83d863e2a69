"""A dialogue's bounded memory: a fixed-slot KV cache, per-token surprisal, eviction at turn boundaries.

`Memory` is the state of one stream: B slots per layer (keys and values [layers, 1, heads, B, head_dim],
preallocated; the valid ones are the first n, so n is the validity mask) and, per slot, the token id,
its place in the dialogue, its turn, its surprisal, the released-code score and a protected flag. Valid slots are always a prefix 0..n-1 in
the order the tokens came (an eviction compacts the survivors), so the model's position of a cached key
(its rank among valid slots) is its slot index; new tokens go to n, n+1, ... The decoder is given the
n valid slots with an all-ones `attention_mask`.

`Dialogue` drives it turn by turn (the rules for bad input are in docs/dialogue.md):
- Before a turn's tokens are fed, if they do not fit, the policy picks the survivors of the old
  tokens (`budget − len(turn)` of them, SirLLM's rule); the turn being fed is never evicted.
- An empty turn (only whitespace) is skipped: no tokens, no eviction, no turn counted.
- A turn with more tokens than `budget − sinks − room` is fed in chunks of that size, with an
  eviction before each chunk; the chunks share the turn's number.
- Text is tokenized by the model's tokenizer; ours is byte-level, so no character is unknown.
"""
import math
import time

import numpy as np

from edge.io.atomic import atomic_open
from edge.tasks.dialogue.decoder import Decoder, Shape, log_softmax

FORMAT = "edge.dialogue-memory/1"


class MemoryFileError(ValueError):
    """A saved memory that cannot be restored; the message names the file and the problem."""


class Memory:
    PER_SLOT = ("ids", "index", "turn", "surprisal", "released", "protected")

    def __init__(self, shape: Shape, slots: int):
        if slots < 1:
            raise ValueError(f"a memory needs at least one slot, got {slots}")
        self.shape, self.slots, self.n = shape, slots, 0
        self.fed = 0                       # tokens fed since the dialogue began
        kv = (shape.layers, 1, shape.heads, slots, shape.head_dim)
        self.keys, self.values = np.zeros(kv, np.float32), np.zeros(kv, np.float32)
        self.ids = np.zeros(slots, np.int64)
        self.index = np.zeros(slots, np.int64)  # the token's place in the whole dialogue
        self.turn = np.zeros(slots, np.int64)
        self.surprisal = np.zeros(slots)   # −log p(x_i | x_<i), the paper's score
        self.released = np.zeros(slots)    # −log p(x_i = x_{i−1} | x_<i), the released code's score
        self.protected = np.zeros(slots, bool)
        self.last_logp = None              # log p(· | everything fed): scores the next turn's first token

    def bytes_per_slot(self, with_scores: bool) -> int:
        """Bytes of a slot as a device would store it (the arrays here are wider, for analysis): the KV in
        float32, a 2-byte token id (a vocabulary ≤ 65,536); a scoring policy adds a float32 score and an
        int32 turn."""
        return self.shape.kv_bytes_per_token + 2 + (8 if with_scores else 0)

    def _run(self, decoder: Decoder, ids: np.ndarray):
        """The valid slots only (a copy of n rows per tensor): our LM smears each key with the slot before it,
        and any decoder attends to n + m keys instead of B + m."""
        n, m = self.n, len(ids)
        past = [(np.ascontiguousarray(self.keys[i][:, :, :n]), np.ascontiguousarray(self.values[i][:, :, :n]))
                for i in range(self.shape.layers)]
        mask = np.ones((1, n + m), np.int64)
        positions = np.arange(n, n + m, dtype=np.int64)[None]
        logits, present = decoder.run(ids[None], mask, positions, past)
        return log_softmax(logits[0].astype(np.float64)), present

    def feed(self, decoder: Decoder, ids, turn: int, protected: bool = False) -> np.ndarray:
        """Append tokens (they must fit); returns their log-probabilities of the next token [m, V]."""
        ids = np.asarray(ids, np.int64)
        m, n = len(ids), self.n
        if n + m > self.slots:
            raise ValueError(f"{m} tokens do not fit: {n} of {self.slots} slots used (evict first)")
        logp, present = self._run(decoder, ids)
        for i, (k, v) in enumerate(present):
            self.keys[i][:, :, n:n + m], self.values[i][:, :, n:n + m] = k[:, :, n:], v[:, :, n:]
        before = np.vstack([self.last_logp if self.last_logp is not None
                            else np.full(logp.shape[1], -math.log(logp.shape[1])), logp[:-1]])
        rows = np.arange(m)
        self.surprisal[n:n + m] = -before[rows, ids]
        # released code (sir_llm/eval_utils.py _cal_selfinfo): logits[i] read at the unshifted id x_i, the list
        # shifted right, the chunk's maximum first, so slot i holds −log p(x_i = x_{i−1})
        raw = -logp[rows, ids]
        self.released[n:n + m] = np.concatenate([[raw.max()], raw[:-1]])
        self.ids[n:n + m], self.turn[n:n + m], self.protected[n:n + m] = ids, turn, protected
        self.index[n:n + m] = np.arange(self.fed, self.fed + m)
        self.n += m
        self.fed += m
        self.last_logp = logp[-1]
        return logp

    def peek(self, decoder: Decoder, ids) -> np.ndarray:
        """Log-probabilities after each of `ids` as if fed, without storing them [m, V]."""
        return self._run(decoder, np.asarray(ids, np.int64))[0]

    def evict(self, policy, keep: int) -> int:
        """Keep the `keep` slots the policy selects, compacted to the front in their order; returns how
        many were evicted."""
        kept = policy.select(self, keep)
        k = len(kept)
        if k == self.n:
            return 0
        self.keys[:, :, :, :k] = self.keys[:, :, :, kept]
        self.values[:, :, :, :k] = self.values[:, :, :, kept]
        for name in self.PER_SLOT:
            arr = getattr(self, name)
            arr[:k] = arr[kept]
        evicted, self.n = self.n - k, k
        return evicted

    def save(self, path, fingerprint: str, extra: dict | None = None) -> None:
        """Write atomically (temp file, fsync, rename): the slots in use and everything to resume."""
        n = self.n
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.array(FORMAT), fingerprint=np.array(fingerprint), fed=np.array(self.fed),
                     keys=self.keys[:, :, :, :n], values=self.values[:, :, :, :n],
                     last_logp=self.last_logp if self.last_logp is not None else np.zeros(0),
                     **{name: getattr(self, name)[:n] for name in self.PER_SLOT},
                     **{f"extra.{k}": np.array(v) for k, v in (extra or {}).items()})

    def restore(self, path, fingerprint: str) -> dict:
        """Load a saved memory into this one; returns the extra fields saved with it."""
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError) as e:
            raise MemoryFileError(f"memory file {path}: cannot read ({type(e).__name__}: {e})") from None
        needed = {"format", "fingerprint", "fed", "keys", "values", "last_logp", *self.PER_SLOT}
        if str(data.get("format")) != FORMAT or not needed <= set(data):
            raise MemoryFileError(f"memory file {path}: not an edge dialogue memory ({FORMAT})")
        if str(data["fingerprint"]) != fingerprint:
            raise MemoryFileError(f"memory file {path}: saved with another model (fingerprint "
                                  f"{data['fingerprint']}, this model {fingerprint})")
        n = len(data["ids"])
        if n > self.slots:
            raise MemoryFileError(f"memory file {path}: holds {n} tokens, this memory has {self.slots} slots")
        kv = self.keys[:, :, :, :n].shape
        if data["keys"].shape != kv or data["values"].shape != kv or any(len(data[k]) != n for k in self.PER_SLOT):
            raise MemoryFileError(f"memory file {path}: arrays of the wrong shape (damaged)")
        self.n, self.fed = n, int(data["fed"])
        self.keys[:, :, :, :n], self.values[:, :, :, :n] = data["keys"], data["values"]
        for name in self.PER_SLOT:
            getattr(self, name)[:n] = data[name]
        self.last_logp = data["last_logp"] if data["last_logp"].size else None
        return {k.removeprefix("extra."): v for k, v in data.items() if k.startswith("extra.")}


class Dialogue:
    """One stream's conversation with a bounded memory: turns in, eviction at turn boundaries."""

    def __init__(self, decoder: Decoder, policy, budget: int):
        self.decoder, self.policy, self.budget = decoder, policy, budget
        self.memory = Memory(decoder.shape, budget)
        self.turn = 0
        self.stats = {"turns": 0, "tokens": 0, "evictions": 0, "evicted_tokens": 0, "empty_turns": 0,
                      "split_turns": 0, "feed_s": 0.0, "evict_s": 0.0}

    def _make_room(self, m: int) -> None:
        if self.memory.n + m > self.budget:
            t = time.perf_counter()
            evicted = self.memory.evict(self.policy, self.budget - m)
            self.stats["evict_s"] += time.perf_counter() - t
            self.stats["evictions"] += 1
            self.stats["evicted_tokens"] += evicted

    def feed(self, text: str, room: int = 0, protected: bool = False) -> np.ndarray | None:
        """Feed text as (the start of) the current turn, evicting first so that it and `room` more tokens
        fit. Returns the log-probabilities after its last token, or None for an empty text."""
        if not text.strip():
            self.stats["empty_turns"] += 1
            return None
        ids = (self.decoder.bos if self.memory.n == 0 and self.turn == 0 else []) + self.decoder.encode(text)
        chunk = max(self.budget - self.policy.sinks - room, 1)
        if len(ids) > chunk:
            self.stats["split_turns"] += 1
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            self._make_room(len(part) + room)
            t = time.perf_counter()
            self.memory.feed(self.decoder, part, self.turn, protected)
            self.stats["feed_s"] += time.perf_counter() - t
            self.stats["tokens"] += len(part)
        return self.memory.last_logp

    def end_turn(self) -> None:
        self.turn += 1
        self.stats["turns"] += 1

    def add_turn(self, text: str, protected: bool = False) -> bool:
        """A whole turn; False if it was empty (skipped, the turn is not counted)."""
        if self.feed(text, protected=protected) is None:
            return False
        self.end_turn()
        return True

    def exchange(self, user: str, bot: str | None = None, max_reply: int = 32) -> str | None:
        """One turn in the chat format: the user's line and the bot's reply, given or generated (greedy, up
        to max_reply tokens). None if the user's line is empty: the turn is skipped and counted."""
        if not user.strip():
            self.stats["empty_turns"] += 1
            return None
        if bot is None:
            self.feed(f"user: {user}\nbot:", room=max_reply)
            bot = self.generate(max_reply)
        else:
            self.feed(f"user: {user}\nbot: {bot}\n")
        self.end_turn()
        return bot.strip()

    def generate(self, max_tokens: int, stop: str = "\n") -> str:
        """Greedy reply, fed into memory token by token (room for it was reserved by `feed`), up to `stop`."""
        out = []
        for _ in range(max_tokens):
            if self.memory.last_logp is None or self.memory.n >= self.budget:
                break
            token = int(np.argmax(self.memory.last_logp))
            out.append(token)
            self.memory.feed(self.decoder, [token], self.turn)
            self.stats["tokens"] += 1
            if stop in self.decoder.decode([token]):
                break
        return self.decoder.decode(out)

    def log_likelihood(self, continuation: str) -> float:
        """log p(continuation | memory), summed over its tokens; the memory is not changed."""
        ids = self.decoder.encode(continuation)
        if not ids or self.memory.last_logp is None:
            raise ValueError("need a non-empty continuation after at least one fed token")
        logp = np.vstack([self.memory.last_logp, self.memory.peek(self.decoder, ids[:-1])]) if len(ids) > 1 \
            else self.memory.last_logp[None]
        return float(logp[np.arange(len(ids)), ids].sum())

    def save(self, path) -> None:
        self.memory.save(path, self.decoder.fingerprint, {"turn": self.turn, "policy": self.policy.describe()})

    def restore(self, path) -> None:
        self.turn = int(self.memory.restore(path, self.decoder.fingerprint)["turn"])
