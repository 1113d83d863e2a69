"""Dialogue memory benchmark (issue 7): SirLLM vs StreamingLLM and the other policies on the tiny LM.

    python bench/dialogue_memory.py                     # the full run behind docs/dialogue-memory-results.md
    python bench/dialogue_memory.py --episodes 50 --dev-episodes 20 --rps-games 1 --out /tmp/r.md   # a quick look

1. Grocery recall: episodes of an item turn, 20 distractor turns and "what did i ask you to buy ?"
   (edge.models.training.dialogue_data, test seeds disjoint from training and dev). Recall is scored by the
   LM's likelihood of the 4 candidate items after "you asked me to buy" (chance 25 %), at budgets of
   25-85 % of the mean episode length, for every policy; random with several seeds; η of SirLLM chosen
   on a dev set. Paired exact McNemar tests. "item kept": every token of the item is still in memory at
   the recall question, a model-independent check. Memory at equal slots, and at equal bytes (a
   scoring policy stores 8 more bytes per slot, so it gets fewer slots for the same bytes).
2. Rock-paper-scissors against players whose preferred move switches mid-game: the LM predicts the
   user's next move (likelihood of each move) and plays its counter; beside it the counter baselines
   (full-history and windowed frequency counters) and constant moves.
3. Cost on this CPU: ms per token fed in a turn and per generated token, eviction cost per turn, peak RSS
   of a process that only loads edge.tasks.dialogue and runs a dialogue, bundle size.
"""
import argparse
import math
import multiprocessing
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from edge.tasks.dialogue.decoder import Decoder
from edge.tasks.dialogue.memory import Dialogue
from edge.tasks.dialogue.policies import make_policy
from edge.models.training.dialogue_data import (BEATS, GROCERY_ANSWER, GROCERY_QUESTION, MOVES, PLAYERS, Player, grocery_episode,
                                       rps_turn)

TEST_SEED, DEV_SEED = 20_000, 30_000  # training uses seeds < 10,000 + epochs, its early stopping 10,000 + seed


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value for paired booleans a, b."""
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = n01 + n10
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(n01, n10) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def run_grocery(decoder, policy, budget, episode):
    """(correct, item kept) for one episode under one policy and budget."""
    d = Dialogue(decoder, policy, budget)
    for turn in episode.turns[:-1]:
        d.add_turn(turn.text(), protected=turn.kind == "item")
    d.feed(f"user: {GROCERY_QUESTION}\nbot: {GROCERY_ANSWER}")
    scores = [d.log_likelihood(" " + c) for c in episode.candidates]
    m = d.memory
    kept_ids = Counter(m.ids[:m.n][m.protected[:m.n]].tolist())
    item_ids = Counter(decoder.encode(" " + episode.answer))
    return episode.candidates[int(np.argmax(scores))] == episode.answer, all(kept_ids[t] >= c for t, c in item_ids.items()), d


WORKER = {}


def start_worker(model):
    WORKER["decoder"] = Decoder(model)


def grocery_chunk(job):
    """(correct, kept) per episode of one chunk, in a worker; a chunk's policy is made fresh (random: seeded)."""
    name, budget, kw, episodes = job
    policy = make_policy(name, **kw)
    return [run_grocery(WORKER["decoder"], policy, budget, ep)[:2] for ep in episodes]


def grocery_arm(pool, name, budget, episodes, desc, **kw):
    """Recall and item-kept flags over the episodes, split into chunks of 25 across the pool's workers."""
    jobs = [(name, budget, kw, episodes[i:i + 25]) for i in range(0, len(episodes), 25)]
    out = [r for chunk in tqdm(pool.imap(grocery_chunk, jobs), total=len(jobs), desc=desc, leave=False,
                               file=sys.stderr) for r in chunk]
    return np.array([c for c, _ in out]), np.array([k for _, k in out])


def rps_game(decoder, policy, budget, moves):
    """Win/tie/loss counts of the LM player (counter of its predicted move) over a sequence of user moves."""
    d, result = Dialogue(decoder, policy, budget), Counter()
    for user in moves:
        d.feed("user: i play", room=12)
        guess = MOVES[int(np.argmax([d.log_likelihood(" " + m) for m in MOVES]))]
        bot = BEATS[guess]
        d.feed(rps_turn(user, bot).text().removeprefix("user: i play"))
        d.end_turn()
        result[outcome(bot, user)] += 1
    return result


def outcome(bot: str, user: str) -> str:
    return "win" if BEATS[user] == bot else "tie" if bot == user else "loss"


def counter_game(moves, window: int | None):
    """A frequency counter: plays the counter of the user's most frequent move so far (last `window` moves)."""
    result = Counter()
    for r, user in enumerate(moves):
        seen = moves[max(0, r - window):r] if window else moves[:r]
        guess = Counter(seen).most_common(1)[0][0] if seen else "rock"
        result[outcome(BEATS[guess], user)] += 1
    return result


def rate(c: Counter) -> str:
    n = sum(c.values())
    return " / ".join(f"{100 * c[k] / n:.1f}" for k in ("win", "tie", "loss"))


def peak_rss_mib(model: str, budget: int, turns: int) -> float:
    """Peak RSS (VmHWM: ru_maxrss would carry the forking parent's) of a fresh process that imports only
    edge.tasks.dialogue and runs a `turns`-turn dialogue."""
    code = ("from edge.tasks.dialogue.decoder import Decoder\nfrom edge.tasks.dialogue.memory import Dialogue\n"
            "from edge.tasks.dialogue.policies import make_policy\n"
            f"d = Dialogue(Decoder({model!r}), make_policy('sirllm'), {budget})\n"
            f"for i in range({turns}):\n    d.add_turn(f'user: my dentist is on friday at {{i}} .\\nbot: noted .\\n')\n"
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def costs(decoder, budget):
    """ms per fed token (turns fed whole), per generated token, and per eviction; over a 200-turn dialogue."""
    rng = random.Random(1)
    d = Dialogue(decoder, make_policy("sirllm"), budget)
    for _ in range(200):
        ep = grocery_episode(rng, 0)
        d.add_turn(ep.turns[0].text())
    t = time.perf_counter()
    d.feed("user: what did i ask you to buy ?\nbot:", room=32)
    reply = d.generate(32)
    gen_tokens = len(decoder.encode(reply))
    gen_ms = (time.perf_counter() - t) * 1e3
    s = d.stats
    return {"feed_ms_per_token": 1e3 * s["feed_s"] / s["tokens"], "evict_ms_per_turn": 1e3 * s["evict_s"] / s["evictions"],
            "generate_ms_per_token": gen_ms / max(gen_tokens, 1), "tokens_per_turn": s["tokens"] / s["turns"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dialogue-lm")
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--dev-episodes", type=int, default=60)
    ap.add_argument("--distractors", type=int, default=20)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.85])
    ap.add_argument("--etas", type=float, nargs="+", default=[1.0, 0.9, 0.7, 0.5])
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--rps-games", type=int, default=2, help="games per player")
    ap.add_argument("--rps-rounds", type=int, default=150)
    ap.add_argument("--rps-budget", type=int, default=96)
    ap.add_argument("--workers", type=int, default=3, help="processes for the grocery episodes (default 3)")
    ap.add_argument("--out", default="docs/dialogue-memory-results.md")
    ap.add_argument("--plot", default=None, help="PNG of recall vs budget (default: next to --out)")
    args = ap.parse_args(argv)
    start = time.time()
    decoder = Decoder(args.model)
    pool = multiprocessing.get_context("fork").Pool(args.workers, start_worker, (args.model,))
    rng_test, rng_dev = random.Random(TEST_SEED), random.Random(DEV_SEED)
    test = [grocery_episode(rng_test, args.distractors) for _ in range(args.episodes)]
    dev = [grocery_episode(rng_dev, args.distractors) for _ in range(args.dev_episodes)]
    lengths = [len(decoder.bos) + len(decoder.encode(ep.text())) for ep in test]
    mean_len = float(np.mean(lengths))
    budgets = {f: int(round(f * mean_len)) for f in args.fractions}
    slot_bytes = {s: Dialogue(decoder, make_policy("streamingllm"), 1).memory.bytes_per_slot(s) for s in (False, True)}
    lines = [f"# Dialogue memory results\n",
             f"Generated by `python bench/dialogue_memory.py` ({' '.join(argv or sys.argv[1:]) or 'defaults'}) with the "
             f"bundle `{Path(decoder.path).name}` ({Path(decoder.path).stat().st_size / 1024:.0f} KiB), "
             f"{decoder.shape.layers} layers × {decoder.shape.heads} heads × {decoder.shape.head_dim}; "
             f"KV {decoder.shape.kv_bytes_per_token} B per token. Grocery: {args.episodes} test episodes, "
             f"{args.distractors} distractor turns, {mean_len:.0f} tokens on average (min {min(lengths)}, "
             f"max {max(lengths)}); 4 candidates (chance 25 %).\n"]

    # η on the dev set: the best mean recall over the budgets (ties: the larger η)
    dev_recall = {eta: np.mean([grocery_arm(pool, "sirllm", b, dev, f"dev η={eta} B={b}", eta=eta)[0].mean()
                                for b in budgets.values()]) for eta in args.etas}
    eta = max(args.etas, key=lambda e: (round(dev_recall[e], 6), e))
    lines.append("## η chosen on the dev set\n\n| η | mean dev recall over the budgets |\n|---|---|")
    lines += [f"| {e:g} | {100 * r:.1f} % |" for e, r in dev_recall.items()]
    lines.append(f"\nChosen: η = {eta:g} ({args.dev_episodes} dev episodes, seeds disjoint from test).\n")

    full, full_kept = grocery_arm(pool, "full", max(lengths) + 1, test, "full cache")
    arms = {}
    for f, b in budgets.items():
        arms[f] = {"streamingllm": grocery_arm(pool, "streamingllm", b, test, f"stream B={b}"),
                   "sirllm": grocery_arm(pool, "sirllm", b, test, f"sirllm B={b}", eta=eta),
                   "sirllm-released": grocery_arm(pool, "sirllm-released", b, test, f"released B={b}", eta=eta),
                   "oracle": grocery_arm(pool, "oracle", b, test, f"oracle B={b}")}
        arms[f]["random"] = [grocery_arm(pool, "random", b, test, f"random{s} B={b}", seed=s)
                             for s in range(args.random_seeds)]
        b_bytes = b * slot_bytes[False] // slot_bytes[True]  # SirLLM's slots at StreamingLLM's bytes
        arms[f]["sirllm-equal-bytes"] = grocery_arm(pool, "sirllm", b_bytes, test, f"sirllm B={b_bytes}", eta=eta)

    pool.close()
    lines.append("## Grocery recall at equal slots\n")
    lines.append(f"Recall % (item kept in memory %). Full cache: **{100 * full.mean():.1f} %** "
                 f"(item kept {100 * full_kept.mean():.0f} %).\n")
    lines.append("| budget | slots | StreamingLLM | SirLLM η=%g | SirLLM as released | random (%d seeds, mean ± sd) | oracle | "
                 "SirLLM − Stream | p (McNemar) | SirLLM − full | p (McNemar) |" % (eta, args.random_seeds))
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for f, b in budgets.items():
        a = arms[f]
        cell = lambda arm: f"{100 * arm[0].mean():.1f} ({100 * arm[1].mean():.0f})"
        rnd = np.array([r[0].mean() for r in a["random"]])
        rnd_kept = np.mean([r[1].mean() for r in a["random"]])
        sir, stream = a["sirllm"][0], a["streamingllm"][0]
        lines.append(f"| {100 * f:.0f} % | {b} | {cell(a['streamingllm'])} | {cell(a['sirllm'])} | {cell(a['sirllm-released'])} | "
                     f"{100 * rnd.mean():.1f} ± {100 * rnd.std():.1f} ({100 * rnd_kept:.0f}) | {cell(a['oracle'])} | "
                     f"{100 * (sir.mean() - stream.mean()):+.1f} | {mcnemar(sir, stream):.2g} | "
                     f"{100 * (sir.mean() - full.mean()):+.1f} | {mcnemar(sir, full):.2g} |")
    lines.append("\nSirLLM (paper score) vs as released, paired: " + ", ".join(
        f"{100 * f:.0f} %: p = {mcnemar(arms[f]['sirllm'][0], arms[f]['sirllm-released'][0]):.2g}" for f in budgets) + ".\n")

    lines.append("## Grocery recall at equal bytes\n")
    lines.append(f"Bytes per slot: StreamingLLM {slot_bytes[False]} (KV + token id), SirLLM {slot_bytes[True]} "
                 "(+ float32 score + int32 turn). At StreamingLLM's bytes SirLLM gets fewer slots:\n")
    lines.append("| budget | bytes | StreamingLLM slots | recall | SirLLM slots | recall | p (McNemar) |\n|---|---|---|---|---|---|---|")
    for f, b in budgets.items():
        a, b_bytes = arms[f], b * slot_bytes[False] // slot_bytes[True]
        lines.append(f"| {100 * f:.0f} % | {b * slot_bytes[False]:,} | {b} | {100 * a['streamingllm'][0].mean():.1f} | "
                     f"{b_bytes} | {100 * a['sirllm-equal-bytes'][0].mean():.1f} | "
                     f"{mcnemar(a['sirllm-equal-bytes'][0], a['streamingllm'][0]):.2g} |")

    lines.append(rps_section(decoder, args))
    c = costs(decoder, 256)
    rss = peak_rss_mib(str(decoder.path), 256, 500)
    lines.append("## Cost on this CPU\n")
    lines.append(f"- turn feeding (one onnxruntime call per turn, {c['tokens_per_turn']:.0f} tokens, 256 slots): "
                 f"**{c['feed_ms_per_token']:.3f} ms per token** per stream")
    lines.append(f"- generation (one call per token, 256 slots): {c['generate_ms_per_token']:.3f} ms per token")
    lines.append(f"- eviction (SirLLM select + compaction, 256 slots): {c['evict_ms_per_turn']:.3f} ms per turn")
    lines.append(f"- peak RSS of a process that imports edge.tasks.dialogue and runs a 500-turn dialogue at 256 slots: {rss:.0f} MiB")
    lines.append(f"- bundle {Path(decoder.path).stat().st_size / 1024:.0f} KiB; memory at 256 slots "
                 f"{256 * slot_bytes[True] / 1024:.0f} KiB")
    lines.append(f"\nBenchmark wall time {time.time() - start:.0f} s; this process's peak RSS "
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (torch imported by the episode generator).\n")
    plot = Path(args.plot or Path(args.out).with_suffix(".png"))
    plot_recall(plot, budgets, arms, full, eta)
    lines.append(f"![recall vs budget]({plot.name})\n")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def rps_section(decoder, args) -> str:
    tokens = len(decoder.encode(rps_turn("scissors", "scissors").text()))
    lines = ["## Rock-paper-scissors, players who switch mid-game\n",
             f"{args.rps_games} games per player, {args.rps_rounds} rounds, the preference switches at round "
             f"{args.rps_rounds // 2}; budget {args.rps_budget} slots ≈ {args.rps_budget // tokens} rounds "
             f"({tokens} tokens per round). Win / tie / loss %.\n",
             "| player | " + " | ".join(["StreamingLLM", *[f"SirLLM η={e:g}" for e in args.etas], "random",
                                         "counter (all history)", f"counter (last {args.rps_budget // tokens})",
                                         "always rock"]) + " |",
             "|---|" + "---|" * (len(args.etas) + 5)]
    totals = Counter()
    for name, (before, after) in PLAYERS.items():
        games = [Player(before, after, args.rps_rounds // 2).moves(random.Random(TEST_SEED + g), args.rps_rounds)
                 for g in range(args.rps_games)]
        arms = [("streamingllm", {})] + [("sirllm", {"eta": e}) for e in args.etas] + [("random", {})]
        cells = []
        for i, (policy, kw) in enumerate(arms):
            c = sum((rps_game(decoder, make_policy(policy, **kw), args.rps_budget, g)
                     for g in tqdm(games, desc=f"rps {name} {policy} {kw}", leave=False, file=sys.stderr)), Counter())
            totals[i] += c["win"] / (args.rps_rounds * args.rps_games * len(PLAYERS))
            cells.append(rate(c))
        for j, window in enumerate((None, args.rps_budget // tokens)):
            c = sum((counter_game(g, window) for g in games), Counter())
            totals[len(arms) + j] += c["win"] / (args.rps_rounds * args.rps_games * len(PLAYERS))
            cells.append(rate(c))
        c = sum((Counter(outcome("rock", u) for u in g) for g in games), Counter())
        totals[len(arms) + 2] += c["win"] / (args.rps_rounds * args.rps_games * len(PLAYERS))
        cells.append(rate(c))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| mean win | " + " | ".join(f"{100 * totals[i]:.1f}" for i in range(len(args.etas) + 5)) + " |\n")
    return "\n".join(lines)


def plot_recall(path, budgets, arms, full, eta):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    x = [100 * f for f in budgets]
    for name, label in (("sirllm", f"SirLLM η={eta:g}"), ("sirllm-released", "SirLLM as released"),
                        ("streamingllm", "StreamingLLM"), ("oracle", "oracle (keeps the item turn)")):
        ax.plot(x, [100 * arms[f][name][0].mean() for f in budgets], marker="o", label=label)
    ax.plot(x, [100 * np.mean([r[0].mean() for r in arms[f]["random"]]) for f in budgets], marker="o", label="random")
    ax.axhline(100 * full.mean(), color="k", ls="--", lw=0.8, label="full cache")
    ax.axhline(25, color="gray", ls=":", label="chance")
    ax.set(xlabel="budget, % of episode tokens", ylabel="grocery recall, %", ylim=(0, 104))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
