"""`edge chat` (a terminal REPL with a bounded memory) and the dialogue branch of `edge replay`.
The module top imports nothing heavy: `edge --help` stays instant."""
import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path

from edge.argtypes import integer, positive_float

POLICY_CHOICES = ("sirllm", "streamingllm", "sirllm-released", "random", "oracle", "full")  # edge.tasks.dialogue.policies
MAX_SHOWN = 4000  # tokens of the transcript kept for --show-memory (a bounded buffer, like the memory)

CHAT_EPILOG = """\
examples:
  edge chat --model dialogue-lm --memory sirllm --budget 128
      talk to the shipped tiny LM; SirLLM keeps 4 sinks + the most surprising tokens in 128 slots
  edge chat --memory streamingllm --budget 64 --show-memory
      after each reply, print the transcript: kept tokens in green (sinks in cyan), evicted ones dim
  edge chat --memory sirllm --eta 0.7 --memory-file chat.npz
      old key tokens fade (η = 0.7 per turn); memory restored from chat.npz and saved after each turn
  printf 'please buy some lemons .\\nit is sunny today .\\nwhat did i ask you to buy ?\\n' | edge chat --budget 48
      a scripted chat from a pipe

in the chat: /memory shows the memory, /stats the counters, /save FILE and /load FILE the memory, /quit
(or Ctrl-D) leaves. Bad input never ends the chat: see docs/dialogue.md."""


def add_memory_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dialogue memory (a bundle with task dialogue-lm, or any decoder in the common layout)")
    g.add_argument("--memory", choices=POLICY_CHOICES, default="sirllm",
                   help="which tokens survive an eviction (default sirllm: sinks + highest decayed surprisal)")
    g.add_argument("--budget", type=integer(8), default=None,
                   help="memory slots (tokens) per dialogue (default: the bundle's cache_slots, else 256)")
    g.add_argument("--eta", type=positive_float, default=1.0,
                   help="SirLLM decay per turn, in (0, 1] (default 1: no decay)")
    g.add_argument("--sinks", type=integer(0), default=4, help="start tokens always kept (default 4)")
    g.add_argument("--recent", type=integer(0), default=0,
                   help="SirLLM: most recent tokens always kept besides the key tokens (default 0, as the paper)")
    g.add_argument("--seed", type=integer(0), default=0, help="seed of the random policy")
    g.add_argument("--max-reply", type=integer(1), default=32, help="tokens generated per bot reply (default 32)")
    g.add_argument("--tokenizer", default=None,
                   help="tokenizer JSON (default: the bundle's, or NAME.tokenizer.json / tokenizer.json beside it)")


def add_subparser(sub) -> None:
    c = sub.add_parser("chat", help="talk to a dialogue LM with a bounded memory (SirLLM, StreamingLLM, ...)",
                       description="A terminal chat with a decoder LM whose memory is a fixed number of KV-cache "
                                   "slots. Before each turn, if the turn does not fit, the memory policy evicts.",
                       epilog=CHAT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--model", "-m", default="dialogue-lm",
                   help="an .onnx decoder in the common layout, or a shipped bundle's name (default dialogue-lm)")
    add_memory_arguments(c)
    c.add_argument("--show-memory", action="store_true", help="print the highlighted memory after each reply")
    c.add_argument("--memory-file", default=None,
                   help="restore the memory from this file if it exists; save it atomically after each turn")
    c.add_argument("--threads", type=integer(1), default=1, help="onnxruntime intra-op threads (default 1)")
    c.set_defaults(func=run_chat)


def open_dialogue(args):
    from edge.runtime import InputError
    from edge.tasks.dialogue.decoder import Decoder
    from edge.tasks.dialogue.memory import Dialogue
    from edge.tasks.dialogue.policies import make_policy

    decoder = Decoder(args.model, tokenizer=args.tokenizer, threads=args.threads)
    if args.eta > 1.0:
        raise InputError(f"--eta {args.eta:g}: the decay must be in (0, 1]")
    budget = args.budget or int(decoder.meta.get("cache_slots", 256))
    if budget <= args.sinks + args.max_reply:
        raise InputError(f"--budget {budget} leaves no room: it must exceed --sinks + --max-reply "
                         f"({args.sinks} + {args.max_reply})")
    policy = make_policy(args.memory, sinks=args.sinks, eta=args.eta, recent=args.recent, seed=args.seed)
    return Dialogue(decoder, policy, budget)


class Transcript:
    """The last MAX_SHOWN tokens fed, to show which of them the memory still holds."""

    def __init__(self):
        self.tokens = deque(maxlen=MAX_SHOWN)  # (global index, id)
        self.count = 0

    def follow(self, dialogue) -> None:
        """Record the tokens fed since the last call: the newest slots (a turn is never evicted while fed)."""
        m = dialogue.memory
        for index, token in zip(m.index[:m.n].tolist(), m.ids[:m.n].tolist()):
            if index >= self.count:
                self.tokens.append((index, token))
                self.count = index + 1

    def render(self, dialogue, colour: bool) -> str:
        m = dialogue.memory
        kept = dict(zip(m.index[:m.n].tolist(), range(m.n)))
        out = []
        for index, token in self.tokens:
            text = dialogue.decoder.decode([token])
            slot = kept.get(index)
            style = "2" if slot is None else "36" if slot < dialogue.policy.sinks else "1;32"
            out.append(f"\033[{style}m{text}\033[0m" if colour else (text if slot is not None else "·" * len(text)))
        return "".join(out)


def run_chat(args) -> int:
    from edge.tasks.dialogue.memory import MemoryFileError

    d = open_dialogue(args)
    if args.memory_file and Path(args.memory_file).exists():
        d.restore(args.memory_file)
        print(f"restored {d.memory.n} tokens, turn {d.turn}, from {args.memory_file}", file=sys.stderr)
    transcript, colour = Transcript(), sys.stdout.isatty()
    transcript.count = d.memory.fed
    print(f"{Path(d.decoder.path).name}: {d.policy.describe()}, {d.budget} slots "
          f"({d.budget * d.memory.bytes_per_slot(d.policy.uses_scores) / 1024:.0f} KiB). /quit to leave.",
          file=sys.stderr)
    stdin = sys.stdin.buffer
    line_no = 0
    while True:
        if sys.stdin.isatty():
            print("you> ", end="", flush=True, file=sys.stderr)
        raw = stdin.readline()
        if not raw:
            break
        line_no += 1
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
            d.stats["bad_utf8"] = d.stats.get("bad_utf8", 0) + 1
            print(f"edge chat: line {line_no}: not UTF-8; the bad bytes became U+FFFD", file=sys.stderr)
        command, _, arg = text.strip().partition(" ")
        try:
            if command == "/quit":
                break
            if command == "/stats":
                print(json.dumps(d.stats))
                continue
            if command == "/memory":
                print(transcript.render(d, colour))
                continue
            if command in ("/save", "/load"):
                (d.save if command == "/save" else d.restore)(arg.strip())
                print(f"{command[1:]}d {d.memory.n} tokens: {arg.strip()}", file=sys.stderr)
                continue
        except (OSError, MemoryFileError) as e:
            print(f"edge chat: {command}: {e}", file=sys.stderr)
            continue
        evictions = d.stats["evictions"]
        reply = d.exchange(text, max_reply=args.max_reply)
        if reply is None:
            print(f"edge chat: line {line_no}: empty; skipped", file=sys.stderr)
            continue
        transcript.follow(d)
        evicted = d.stats["evictions"] > evictions
        print(f"bot: {reply}")
        if args.show_memory:
            print(transcript.render(d, colour) + f"\n[{d.memory.n}/{d.budget} slots{', evicted' if evicted else ''}]")
        if args.memory_file:
            d.save(args.memory_file)
    return 0


def is_dialogue_model(name_or_path) -> bool:
    """A bundle with task dialogue-lm, or an ONNX decoder in the common layout."""
    from edge.bundle import BundleError, resolve
    try:
        path = resolve(name_or_path)
    except BundleError:
        return False
    if not Path(path).is_file():
        return False
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX: the ordinary replay path says so
        return False
    props = {p.key: p.value for p in model.metadata_props}
    try:
        task = json.loads(props.get("edge", "{}")).get("task")
    except (json.JSONDecodeError, AttributeError):
        task = None
    return task == "dialogue-lm" or any(i.name == "past_key_values.0.key" for i in model.graph.input)


def run_replay(args) -> int:
    """`edge replay dialogue.jsonl --model dialogue-lm`: one JSON object per line, {"user": text} with
    optional "bot" (else the model replies) and "dialogue" (an id: several dialogues interleave, each with
    its own memory). A bad line is one line on stderr (file:line), counted; the others go on."""
    path = Path(args.input)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read ({e.strerror})") from None
    dialogues, rows, bad = {}, [], 0
    start = time.perf_counter()
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        problem = None
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "not UTF-8"
        except json.JSONDecodeError as e:
            problem = f"not JSON ({e.msg})"
        if problem is None and not (isinstance(record, dict) and isinstance(record.get("user"), str)
                                    and isinstance(record.get("bot", ""), str)):
            problem = 'needs an object with a "user" string (and optionally "bot" and "dialogue" strings)'
        if problem:
            bad += 1
            print(f"edge replay: {path}:{no}: {problem}; line skipped", file=sys.stderr)
            continue
        key = str(record.get("dialogue", "0"))
        if key not in dialogues:
            dialogues[key] = open_dialogue(args)
        d = dialogues[key]
        reply = d.exchange(record["user"], record.get("bot"), args.max_reply)
        rows.append({"line": no, "dialogue": key, "turn": d.turn, "user": record["user"], "bot": reply,
                     "skipped": reply is None, "memory_tokens": d.memory.n, "evicted_tokens": d.stats["evicted_tokens"]})
    wall = time.perf_counter() - start
    summary = {"file": str(path), "dialogues": len(dialogues), "turns": len(rows), "bad_lines": bad,
               "wall_s": round(wall, 3), "per_dialogue": {k: v.stats for k, v in dialogues.items()}}
    if args.output:
        from edge.io.atomic import atomic_write
        atomic_write(args.output, "".join(json.dumps(r) + "\n" for r in rows))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for r in rows:
            print(f"[{r['dialogue']}] user: {r['user']}\n[{r['dialogue']}] bot: {r['bot']}")
        print(f"{len(rows)} turns in {len(dialogues)} dialogues, {bad} bad lines, {wall:.2f} s", file=sys.stderr)
    return 0


# the task registry's hooks (edge.tasks): a dialogue file replays here, with these options
claims = is_dialogue_model
add_replay_arguments = add_memory_arguments
