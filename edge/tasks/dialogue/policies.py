"""Memory policies: which cached tokens survive an eviction. One interface, `select(memory, keep)`.

Every policy keeps the first `sinks` tokens (StreamingLLM's attention sinks) and returns the sorted
slot indices of exactly `min(keep, n)` survivors, so that every arm fills the same budget:

- `full`: never evicts (the memory must be large enough: an eviction is an error).
- `streamingllm`: sinks + the most recent tokens.
- `sirllm`: sinks + the `recent` most recent tokens + the tokens with the highest decayed surprisal.
  SirLLM multiplies stored scores by η after every turn, so at turn T a token from turn t has
  e·η^(T−t). For a fixed T that ranks like the static key log e + t·log(1/η): no per-turn pass over
  the cache, and no underflow after thousands of turns (0.7^n leaves float32's range after ~290 turns).
- `sirllm-released`: the same ranking on the score of SirLLM's released code, −log p(x_i = x_{i−1}),
  which never depends on the token scored (the paper's off-by-one; see Memory.feed).
- `random`: sinks + a uniform random subset (its own seeded generator).
- `oracle`: sinks + the tokens of protected turns (the benchmark's item turn) + the most recent.
"""
import math

import numpy as np

SCORE_FLOOR = 1e-6  # surprisal 0 (a certain token) still has a finite log key


class MemoryFull(RuntimeError):
    pass


def compose(n: int, keep: int, sinks: int, ranked: np.ndarray) -> np.ndarray:
    """The first `sinks` slots, then slots from `ranked` (best first) until `keep` are chosen; sorted."""
    if keep >= n:
        return np.arange(n)
    head = np.arange(min(sinks, keep, n))
    rest = ranked[ranked >= len(head)][:keep - len(head)]
    return np.sort(np.concatenate([head, rest]))


def most_recent_first(n: int) -> np.ndarray:
    return np.arange(n)[::-1]


class Policy:
    name = "policy"
    uses_scores = False  # whether the memory must store a score per slot (counts in its bytes per slot)

    def __init__(self, sinks: int = 4):
        self.sinks = sinks

    def select(self, memory, keep: int) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class FullCache(Policy):
    name = "full"

    def select(self, memory, keep: int) -> np.ndarray:
        if keep < memory.n:
            raise MemoryFull(f"the full-cache policy never evicts, but {memory.n} tokens do not fit in {keep} slots: "
                             "raise --budget or pick another --memory policy")
        return np.arange(memory.n)


class StreamingLLM(Policy):
    name = "streamingllm"

    def select(self, memory, keep: int) -> np.ndarray:
        return compose(memory.n, keep, self.sinks, most_recent_first(memory.n))


class SirLLM(Policy):
    name = "sirllm"
    uses_scores = True
    score_field = "surprisal"

    def __init__(self, sinks: int = 4, eta: float = 1.0, recent: int = 0):
        super().__init__(sinks)
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"decay η must be in (0, 1], got {eta}")
        self.eta, self.recent = eta, recent

    def keys(self, memory) -> np.ndarray:
        """log e + t·log(1/η): ranks exactly like e·η^(T−t) at any turn T."""
        score = getattr(memory, self.score_field)[:memory.n]
        return np.log(np.maximum(score, SCORE_FLOOR)) + memory.turn[:memory.n] * math.log(1.0 / self.eta)

    def select(self, memory, keep: int) -> np.ndarray:
        n = memory.n
        recent = np.arange(max(n - self.recent, 0), n)[::-1]
        by_key = np.argsort(-self.keys(memory), kind="stable")  # ties: the older token first, as a stable sort
        ranked = np.concatenate([recent, by_key[~np.isin(by_key, recent)]])
        return compose(n, keep, self.sinks, ranked)

    def describe(self) -> str:
        return f"{self.name} (η={self.eta:g}, recent={self.recent})"


class SirLLMReleased(SirLLM):
    name = "sirllm-released"
    score_field = "released"


class RandomKeep(Policy):
    name = "random"

    def __init__(self, sinks: int = 4, seed: int = 0):
        super().__init__(sinks)
        self.seed, self.rng = seed, np.random.default_rng(seed)

    def select(self, memory, keep: int) -> np.ndarray:
        return compose(memory.n, keep, self.sinks, self.rng.permutation(memory.n))

    def describe(self) -> str:
        return f"{self.name} (seed {self.seed})"


class Oracle(Policy):
    """Keeps the slots the memory marks as protected (e.g. the grocery item turn), then the most recent."""
    name = "oracle"

    def select(self, memory, keep: int) -> np.ndarray:
        n = memory.n
        recent = most_recent_first(n)
        protected = memory.protected[:n][recent]
        return compose(n, keep, self.sinks, np.concatenate([recent[protected], recent[~protected]]))


POLICIES = {p.name: p for p in (FullCache, StreamingLLM, SirLLM, SirLLMReleased, RandomKeep, Oracle)}


def make_policy(name: str, sinks: int = 4, eta: float = 1.0, recent: int = 0, seed: int = 0) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown memory policy {name!r} (one of {', '.join(POLICIES)})")
    cls = POLICIES[name]
    if issubclass(cls, SirLLM):
        return cls(sinks, eta=eta, recent=recent)
    if cls is RandomKeep:
        return cls(sinks, seed=seed)
    return cls(sinks)
