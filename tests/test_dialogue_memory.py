"""Dialogue memory (edge.tasks.dialogue): policies against brute-force selections, the decay ranking, the
released score's off-by-one, save/restore, and bad input at every boundary."""
import itertools
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edge.tasks.dialogue.decoder import Decoder
from edge.tasks.dialogue.memory import Dialogue, Memory, MemoryFileError
from edge.tasks.dialogue.policies import (FullCache, MemoryFull, Oracle, RandomKeep, SirLLM, SirLLMReleased,
                                    StreamingLLM)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from dialogue_tiny import build_tiny_bundle
    return build_tiny_bundle(tmp_path_factory.mktemp("dialogue"))


@pytest.fixture(scope="module")
def decoder(tiny_bundle):
    return Decoder(tiny_bundle[0])


def fake_memory(rng, n, turns):
    """What a policy reads: n slots with distinct random scores, turn numbers and protected flags."""
    turn = np.sort(rng.integers(0, turns, n))
    return SimpleNamespace(n=n, turn=turn, surprisal=rng.uniform(0.01, 8.0, n), released=rng.uniform(0.01, 8.0, n),
                           protected=rng.random(n) < 0.3)


def brute_force(n, keep, sinks, value):
    """The subset of size keep that contains the sinks and maximises value(subset), by enumeration."""
    if keep >= n:
        return list(range(n))
    rest = range(min(sinks, keep), n)
    head = list(range(min(sinks, keep)))
    best = max(itertools.combinations(rest, keep - len(head)), key=lambda c: value(head + list(c)))
    return head + list(best)


CASES = [(n, keep, seed) for n in (6, 9, 11) for keep in (2, 5, 8) for seed in range(3)]


@pytest.mark.parametrize("n,keep,seed", CASES)
def test_streamingllm_keeps_sinks_and_the_most_recent(n, keep, seed):
    mem = fake_memory(np.random.default_rng(seed), n, 5)
    expected = brute_force(n, keep, 4, lambda s: sum(s))  # the most recent: the largest indices
    assert StreamingLLM(4).select(mem, keep).tolist() == sorted(expected)


@pytest.mark.parametrize("n,keep,seed", CASES)
@pytest.mark.parametrize("eta,recent", [(1.0, 0), (0.7, 0), (0.5, 2)])
def test_sirllm_keeps_the_top_decayed_products(n, keep, seed, eta, recent):
    """Brute force on the paper's form: the stored score multiplied by η at each turn since it came."""
    rng = np.random.default_rng(seed)
    mem = fake_memory(rng, n, 6)
    now = int(mem.turn.max()) + 1
    decayed = mem.surprisal * eta ** (now - mem.turn)
    recent_first = range(n - 1, max(n - recent, 0) - 1, -1)

    def value(s):  # the recent slots first (the newest before the older), then the largest decayed total
        return (tuple(i in s for i in recent_first), sum(decayed[i] for i in s))
    expected = brute_force(n, keep, 4, value)
    assert SirLLM(4, eta=eta, recent=recent).select(mem, keep).tolist() == sorted(expected)


@pytest.mark.parametrize("n,keep,seed", CASES)
def test_sirllm_released_ranks_the_released_score(n, keep, seed):
    mem = fake_memory(np.random.default_rng(seed), n, 6)
    expected = brute_force(n, keep, 4, lambda s: sum(mem.released[i] for i in s))
    assert SirLLMReleased(4, eta=1.0).select(mem, keep).tolist() == sorted(expected)


@pytest.mark.parametrize("n,keep,seed", CASES)
def test_oracle_keeps_protected_slots_first_then_recent(n, keep, seed):
    mem = fake_memory(np.random.default_rng(seed), n, 6)
    expected = brute_force(n, keep, 4, lambda s: (sum(mem.protected[i] for i in s), sum(s)))
    assert Oracle(4).select(mem, keep).tolist() == sorted(expected)


def test_random_keeps_sinks_and_a_uniform_subset():
    mem = fake_memory(np.random.default_rng(0), 8, 3)
    policy, counts = RandomKeep(4, seed=0), {}
    for _ in range(3000):
        kept = tuple(policy.select(mem, 6).tolist())
        assert kept[:4] == (0, 1, 2, 3)
        counts[kept] = counts.get(kept, 0) + 1
    assert len(counts) == math.comb(4, 2)  # every pair of the 4 non-sink slots
    assert max(counts.values()) / min(counts.values()) < 1.4  # 500 expected each; ±5 sd is ~1.25


def test_full_cache_refuses_to_evict():
    mem = fake_memory(np.random.default_rng(0), 8, 3)
    assert FullCache(4).select(mem, 8).tolist() == list(range(8))
    with pytest.raises(MemoryFull):
        FullCache(4).select(mem, 7)


def test_log_key_ranks_like_the_decayed_product():
    rng = np.random.default_rng(3)
    for eta in (0.9, 0.7, 0.5):
        mem = fake_memory(rng, 200, 40)
        now = int(mem.turn.max()) + 1
        product = mem.surprisal * eta ** (now - mem.turn)
        assert np.argsort(-SirLLM(4, eta=eta).keys(mem), kind="stable").tolist() == \
            np.argsort(-product, kind="stable").tolist()


def test_log_key_still_ranks_where_the_product_underflows():
    """After 3,000 turns at η = 0.7 every old product is 0.0 in float64; the keys still order them."""
    mem = SimpleNamespace(n=4, turn=np.array([0, 1, 2, 3]), surprisal=np.array([5.0, 1.0, 2.0, 0.5]))
    now = 3000
    assert np.all(mem.surprisal * 0.7 ** (now - mem.turn) == 0.0)
    # e·η^(T−t) ∝ e·η^(−t): a newer turn gains a factor 1/0.7 per turn; by hand: 5, 1.43, 4.08, 1.46
    assert np.argsort(-SirLLM(0, eta=0.7).keys(mem)).tolist() == [0, 2, 3, 1]


def test_scores_are_surprisal_and_the_released_variant_is_off_by_one(tiny_bundle, decoder):
    """Against torch: the paper's score at i is −log p(x_i | x_<i); the released one is −log p(x_{i−1}) read
    from the same distribution (it never depends on x_i), with the turn's maximum at its first token."""
    _, lm = tiny_bundle
    ids = torch.randint(0, lm.config["vocab"], (1, 20), generator=torch.Generator().manual_seed(5))
    memory = Memory(decoder.shape, 32)
    memory.feed(decoder, ids[0, :8].numpy(), turn=0)
    memory.feed(decoder, ids[0, 8:].numpy(), turn=1)
    with torch.no_grad():
        logp = torch.log_softmax(lm(ids)[0].double(), -1).numpy()
    x = ids[0].numpy()
    np.testing.assert_allclose(memory.surprisal[1:20], -logp[np.arange(19), x[1:]], atol=1e-4)
    assert memory.surprisal[0] == pytest.approx(math.log(decoder.shape.vocab))  # no context: uniform
    np.testing.assert_allclose(memory.released[1:8], -logp[np.arange(7), x[:7]], atol=1e-4)
    np.testing.assert_allclose(memory.released[9:20], -logp[np.arange(8, 19), x[8:19]], atol=1e-4)
    assert memory.released[8] == pytest.approx(max(-logp[np.arange(8, 20), x[8:20]]), abs=1e-4)


def test_eviction_keeps_selected_tokens_and_their_cache_rows(decoder):
    d = Dialogue(decoder, StreamingLLM(4), 40)
    for i in range(6):
        d.add_turn(f"user: my dentist is on friday at {i} .\nbot: noted .\n")
    m = d.memory
    assert m.n <= 40 and d.stats["evictions"] > 0
    before = {int(i): (m.keys[:, :, :, s].copy(), int(t)) for s, (i, t) in enumerate(zip(m.index[:m.n], m.ids[:m.n]))}
    kept = StreamingLLM(4).select(m, 20)
    m.evict(StreamingLLM(4), 20)
    assert m.n == 20
    for s in range(20):
        k, token = before[int(m.index[s])]
        assert token == m.ids[s] and np.array_equal(k, m.keys[:, :, :, s])
    assert sorted(before)[:4] == m.index[:4].tolist() and len(kept) == 20


def test_save_restore_round_trip(tmp_path, decoder):
    turns = [f"user: please buy {x} today .\nbot: ok .\n" for x in ("lemons", "rice", "tea", "jam", "milk")]
    a = Dialogue(decoder, SirLLM(4, eta=0.9), 48)
    for t in turns[:4]:
        a.add_turn(t)
    a.save(tmp_path / "m.npz")
    b = Dialogue(decoder, SirLLM(4, eta=0.9), 48)
    b.restore(tmp_path / "m.npz")
    assert b.turn == a.turn and b.memory.n == a.memory.n
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file
    a.add_turn(turns[4])
    b.add_turn(turns[4])
    for name in ("ids", "index", "turn", "surprisal", "released"):
        np.testing.assert_array_equal(getattr(a.memory, name)[:a.memory.n], getattr(b.memory, name)[:b.memory.n])
    np.testing.assert_array_equal(a.memory.keys, b.memory.keys)
    assert a.log_likelihood(" lemons") == b.log_likelihood(" lemons")


def test_restore_refuses_garbage_and_other_models(tmp_path, decoder, tiny_bundle):
    d = Dialogue(decoder, SirLLM(4), 48)
    (tmp_path / "junk.npz").write_bytes(b"\x00\x01 not a memory")
    with pytest.raises(MemoryFileError, match="junk.npz"):
        d.restore(tmp_path / "junk.npz")
    d.add_turn("user: hello .\nbot: hi .\n")
    d.memory.save(tmp_path / "other.npz", "another-model")
    with pytest.raises(MemoryFileError, match="another model"):
        Dialogue(decoder, SirLLM(4), 48).restore(tmp_path / "other.npz")
    np.savez(tmp_path / "partial.npz", format=np.array("edge.dialogue-memory/1"), ids=np.zeros(3))
    with pytest.raises(MemoryFileError, match="partial.npz: not an edge dialogue memory"):
        d.restore(tmp_path / "partial.npz")
    d.save(tmp_path / "big.npz")
    with pytest.raises(MemoryFileError, match="slots"):
        Dialogue(decoder, SirLLM(4), 8).restore(tmp_path / "big.npz")


def test_bad_turns_follow_the_documented_rules(decoder):
    d = Dialogue(decoder, SirLLM(4), 32)
    assert d.exchange("   \n ", "ok .") is None and d.stats["empty_turns"] == 1 and d.turn == 0
    long = " ".join(["my dentist is on friday at nine ."] * 20)  # ~160 tokens > 32 slots
    assert d.exchange(long, "noted .") == "noted ."
    assert d.stats["split_turns"] == 1 and d.memory.n <= 32 and d.turn == 1
    assert set(d.memory.turn[4:d.memory.n]) == {0}  # the chunks share the turn's number
    strange = "caf\u00e9 \U0001F600 \u4e2d\u6587 \x00\x07 \ufffd tab\there"
    ids = decoder.encode(strange)
    assert decoder.decode(ids) == strange.lower()  # byte-level: nothing unknown, nothing lost
    assert d.exchange(strange, "ok .") == "ok ." and d.memory.n <= 32


def test_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path, tiny_bundle):
    from tokenizers import Tokenizer, models
    from edge.bundle import BundleError
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(5000)}, unk_token="w0"))
    big.save(str(tmp_path / "big.json"))
    with pytest.raises(BundleError, match="not this model's tokenizer"):
        Decoder(tiny_bundle[0], tokenizer=tmp_path / "big.json")
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(BundleError, match="broken.json"):
        Decoder(tiny_bundle[0], tokenizer=tmp_path / "broken.json")


def edge_cli(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], input=stdin, capture_output=True, timeout=120)


def test_chat_survives_bad_lines_and_saves_its_memory(tmp_path, tiny_bundle):
    script = b"please buy lemons .\n\n   \n\xff\xfe\xfa broken bytes\n" + b"word " * 200 + b"\n/stats\n/load /no/such.npz\n"
    r = edge_cli("chat", "--model", str(tiny_bundle[0]), "--budget", "40", "--max-reply", "4",
                 "--memory-file", str(tmp_path / "chat.npz"), stdin=script)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert err.count("empty; skipped") == 2 and "line 4: not UTF-8" in err and "/no/such.npz" in err
    stats = json.loads(r.stdout.decode().splitlines()[-1])
    assert stats["turns"] == 3 and stats["empty_turns"] == 2 and stats["split_turns"] == 1 and stats["bad_utf8"] == 1
    restored = Dialogue(Decoder(tiny_bundle[0]), SirLLM(4), 40)
    restored.restore(tmp_path / "chat.npz")
    assert restored.turn == 3 and 0 < restored.memory.n <= 40


def test_chat_rejects_bad_arguments(tiny_bundle):
    r = edge_cli("chat", "--model", str(tiny_bundle[0]), "--budget", "3")
    assert r.returncode == 2 and b"--budget" in r.stderr
    r = edge_cli("chat", "--model", str(tiny_bundle[0]), "--budget", "16", "--max-reply", "32")
    assert r.returncode == 2 and b"leaves no room" in r.stderr


def test_replay_of_a_dialogue_file_with_garbage_lines(tmp_path, tiny_bundle):
    lines = [b'{"user": "please buy lemons .", "bot": "ok ."}', b"not json at all", b'{"user": 5}',
             b'{"user": "hi \xff there"}', b'{"dialogue": "b", "user": "my dentist is on friday ."}', b"",
             b'{"user": "", "bot": "ok ."}', b'{"user": "what did i ask you to buy ?"}']
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    r = edge_cli("replay", str(tmp_path / "d.jsonl"), "--model", str(tiny_bundle[0]), "--budget", "32",
                 "--max-reply", "3", "--json", "--output", str(tmp_path / "out.jsonl"))
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "d.jsonl:2: not JSON" in err and "d.jsonl:3:" in err and "d.jsonl:4: not UTF-8" in err
    summary = json.loads(r.stdout)
    assert summary["bad_lines"] == 3 and summary["dialogues"] == 2 and summary["turns"] == 4
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 5, 7, 8] and rows[2]["skipped"] and rows[0]["bot"] == "ok ."


def load_bench():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "bench" / "dialogue_memory.py"
    spec = importlib.util.spec_from_file_location("dialogue_memory_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_mcnemar_is_the_exact_binomial_test():
    from scipy.stats import binomtest
    bench = load_bench()
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random(60) < rng.random(), rng.random(60) < rng.random()
        n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
        expected = binomtest(n01, n01 + n10, 0.5).pvalue if n01 + n10 else 1.0
        assert bench.mcnemar(a, b) == pytest.approx(expected, rel=1e-9)


def test_benchmark_item_check_is_model_independent(decoder):
    """Whatever the model's weights: StreamingLLM at a quarter of the episode has dropped the item turn, the
    oracle and the full cache still hold the item's tokens."""
    import random

    from edge.models.training.dialogue_data import grocery_episode
    bench = load_bench()
    episode = grocery_episode(random.Random(7), 20)
    length = len(decoder.encode(episode.text())) + 1
    assert not bench.run_grocery(decoder, StreamingLLM(4), length // 4, episode)[1]
    assert bench.run_grocery(decoder, Oracle(4), length // 4, episode)[1]
    assert bench.run_grocery(decoder, FullCache(4), length + 1, episode)[1]


def test_show_memory_marks_what_the_memory_still_holds(decoder):
    """The chat's transcript view: kept tokens as text, evicted ones as dots (ANSI colours on a terminal)."""
    from edge.tasks.dialogue.cli import Transcript
    d, transcript = Dialogue(decoder, StreamingLLM(4), 24), Transcript()
    for text in ("user: please buy lemons today .\nbot: ok .\n", "user: it is sunny near the park .\nbot: ok .\n"):
        d.add_turn(text)
        transcript.follow(d)
    assert transcript.count == d.memory.fed and d.stats["evicted_tokens"] > 0
    plain = transcript.render(d, colour=False)
    kept = decoder.decode(d.memory.ids[:d.memory.n])
    assert plain.endswith(kept[-20:]) and "·" in plain and "lemons" not in plain  # the item turn went first
    coloured = transcript.render(d, colour=True)
    assert coloured.count("\033[36m") == 4 and "\033[2m" in coloured and "\033[1;32m" in coloured
