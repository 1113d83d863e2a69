"""The `edge` command line. Each subcommand imports what it needs when it runs, so `edge --help`
is instant and nothing here imports torch unless a subcommand needs it."""
import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  edge replay examples/imu-demo.csv --model imu-attitude --plot demo.png
                                     stream a recording through a bundle: summary, outputs, plot
  edge inspect model.onnx            what a bundle holds: channels, state, cost per step
  edge bench model.onnx              µs per stream-sample on every engine, against the FLOP floor
  edge demo                          build, export and run each model of the zoo (needs torch)
  edge replay ../shared/data/ett/ETTh1.csv --model ett-forecast --plot f.png
                                     the next 720 hours of every channel, every hour: MSE by horizon, plot
  edge replay examples/har-watch-demo.csv --model har-watch --plot har.png
                                     class probabilities every sample of a watch recording
  edge run --config examples/edge.toml
                                     the MQTT daemon: sensor topics in, model outputs out, durable state
  edge sim imu --devices 20 --rate 200 --broker 127.0.0.1:1883
                                     simulated IMUs publishing over MQTT (with faults on request)
  edge chat --memory sirllm --budget 128 --show-memory
                                     the dialogue LM with a bounded memory; kept tokens highlighted
  edge fit har-watch --device cortex-m4f     does it fit, how fast, how much energy
  edge export-c imu-attitude -o fw/ --build  the int8 step as C99 firmware (host and Cortex-M4)
"""


REPLAY_DESCRIPTION = """\
Stream a recording (CSV, NPZ or JSON lines) through a bundle sample by sample, as a device would,
and print a summary: samples, duration, engine and why, µs per sample, real-time factor, and the
inclination RMSE (BROAD metric) when the file has a reference orientation and the bundle outputs a
quaternion.

The recording's channels are matched to the bundle's inputs by name (acc_x..gyr_z for IMU
bundles). If the bundle has a sample rate and the file's differs by more than 0.5 %, the inputs are
resampled to it (linear) and every input sample gets the output of the latest model sample at or
before it (no look-ahead).

Imperfect files (see edge.io.recordings): a sample with NaN is not fed; a NaN run up to --gap-s is
skipped with the state held, and its output rows repeat the last output (held=1); after a gap
(nothing fed for longer than --gap-s) the state resets. A truncated last line is dropped with a
warning. Anything else wrong is one line naming the file and line, and exit code 2."""

REPLAY_EPILOG = """\
examples:
  edge replay examples/imu-demo.csv --model imu-attitude
      the shipped attitude model on one minute of BROAD: summary with the inclination RMSE
  edge replay walk.csv --model imu-attitude --acc-unit g --gyr-unit deg/s --output walk-q.csv
      a phone log in g and deg/s; one row per sample: t,qw,qx,qy,qz,roll_deg,pitch_deg,held
  edge replay log.csv --model my.onnx --rate-hz 100 --plot log.png --json
      a file without a t column at 100 Hz, any bundle; plot its outputs; summary as JSON
  edge replay examples/imu-demo.csv --model imu-attitude --engine onnxruntime --chunk 1024
      the same on onnxruntime, 1024 samples per block call
  edge replay examples/imu-demo.csv --model imu-attitude --detector anomaly-imu --plot events.png
      also anomaly events on the bundle's inputs (a forecast bundle's residuals, else the detector's
      own AR forecaster): listed in the summary, shaded on the plot"""


def _inspect_decoder(path, as_json: bool) -> int:
    """`edge inspect` of a dialogue LM (the common decoder layout, not a step program)."""
    import math

    import onnx

    from edge.tasks.dialogue.decoder import Decoder
    d = Decoder(path)
    model = onnx.load(str(d.path), load_external_data=False)
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    s, slots = d.shape, int(d.meta.get("cache_slots", 0))
    info = {"metadata": d.meta, "parameters": params, "kv_bytes_per_slot": s.kv_bytes_per_token,
            "cache_bytes_default": s.kv_bytes_per_token * slots}
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bundle      {d.path}  ({Path(d.path).stat().st_size / 1024:.1f} KiB)")
    print(f"task        {d.meta.get('task')} (decoder in the common ONNX layout: input_ids, attention_mask, "
          f"position_ids, past_key_values.* -> logits, present.*)")
    print(f"model       {s.layers} layers × {s.heads} heads × {s.head_dim}, vocabulary {s.vocab:,}, "
          f"{params:,} parameters ({params * 4 / 1024:.0f} KiB fp32)")
    print(f"memory      {s.kv_bytes_per_token:,} bytes of keys and values per slot; default budget {slots} slots "
          f"= {s.kv_bytes_per_token * slots / 1024:.0f} KiB per stream")
    print(f"positions   {d.meta.get('positions', '-')}")
    print(f"tokenizer   {d.meta.get('tokenizer', '-')}")
    for key in ("parity", "metrics", "provenance"):
        if d.meta.get(key):
            print(f"{key:<11} {json.dumps(d.meta[key])}")
    return 0


def cmd_inspect(args) -> int:
    from edge.bundle import DIALOGUE_SCHEMA, read_bundle, read_schema, resolve
    from edge.cost import step_cost
    if read_schema(args.bundle) == DIALOGUE_SCHEMA:
        return _inspect_decoder(resolve(args.bundle), args.json)
    b = read_bundle(args.bundle)
    meta, cost = b.meta, step_cost(b.meta, b.weights)
    if args.json:
        print(json.dumps({"metadata": meta, "cost": cost}, indent=2))
        return 0
    ch = lambda cs: ", ".join(c["name"] + (f" [{c['unit']}]" if c.get("unit") else "") for c in cs)
    print(f"bundle      {b.path}  ({len(b.model_bytes) / 1024:.1f} KiB)")
    print(f"name/task   {meta.get('name') or '-'} / {meta['task']}")
    print(f"model       {meta.get('model', {}).get('class', '?')}: {', '.join(meta.get('model', {}).get('cells', []))}")
    print(f"inputs      {len(meta['inputs'])}: {ch(meta['inputs'])}")
    print(f"outputs     {len(meta['outputs'])}: {ch(meta['outputs'])}")
    rate = meta.get("sample_rate_hz")
    print(f"rate        {f'{rate:g} Hz' if rate else 'any'}")
    print(f"parameters  {cost['parameters']:,} ({cost['parameter_bytes_fp32'] / 1024:.1f} KiB fp32, "
          f"{cost['parameter_bytes_int8'] / 1024:.1f} KiB int8)")
    print(f"state       {cost['state_floats']:,} floats per stream ({cost['state_bytes']:,} bytes) in "
          f"{len(meta['state'])} tensors")
    for s in meta["state"]:
        print(f"  {s['name']:<28} {s['shape']}")
    print(f"cost/step   {cost['macs']:,} MACs  (" + ", ".join(f"{k} {v:,}" for k, v in cost["macs_by_op"].items()) + ")")
    print(f"program     {len(meta['program']['ops'])} ops: " + " → ".join(op["op"] for op in meta["program"]["ops"]))
    if meta.get("normalisation"):
        print(f"normalise   {json.dumps(meta['normalisation'])}")
    if meta.get("parity"):
        print(f"parity      {json.dumps(meta['parity'])}")
    if meta.get("metrics"):
        print(f"metrics     {json.dumps(meta['metrics'])}")
    print(f"provenance  {json.dumps(meta.get('provenance', {}))}")
    return 0


def cmd_bench(args) -> int:
    from edge.benchmark import run
    return run(args)


def cmd_replay(args) -> int:
    from edge.replay import run
    return run(args)


# what `edge eval` scores -> the task module that evaluates it (its add_arguments and run)
EVALUATIONS = {
    "imu-attitude": "edge.tasks.attitude.evaluate",
    "har-watch": "edge.tasks.classify.evaluate",
    "anomaly": "edge.tasks.anomaly.evaluate",
    "ett-forecast": "edge.tasks.forecast.evaluate",
    "nab": "edge.tasks.anomaly.nab",
}


def cmd_eval(args) -> int:
    import importlib
    return importlib.import_module(EVALUATIONS[args.task]).run(args)


# task -> module whose main(argv) trains it (torch is imported only when one runs)
TRAINERS = {
    "imu-attitude": "edge.models.training.attitude",
    "dialogue-lm": "edge.models.training.dialogue",
    "har-watch": "edge.models.training.har",
    "anomaly": "edge.tasks.anomaly.tune",
    "ett-forecast": "edge.models.training.forecast",
    "forecast": "edge.models.training.series_forecast",
    "classify": "edge.models.training.series_classify",
}


def cmd_train(args) -> int:
    import importlib
    return importlib.import_module(TRAINERS[args.task]).main(args.options)


def cmd_demo(args) -> int:
    from edge.models.training.demo import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge", description="Streaming runtime for recurrent, state-space and spiking "
                                "models: one ONNX step bundle, run on Numba or onnxruntime.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    i = sub.add_parser("inspect", help="show a bundle's metadata, state and cost per step",
                       description="Show what a bundle holds: channels and units, sample rate, state tensors, "
                                   "parameters, MACs per step, parity and provenance.")
    i.add_argument("bundle", help="an .onnx bundle, or the name of a shipped bundle")
    i.add_argument("--json", action="store_true", help="print the metadata and cost as JSON")
    i.set_defaults(func=cmd_inspect)
    b = sub.add_parser("bench", help="µs per stream-sample on every engine, with ratios",
                       description="Time one bundle on torch eager (if installed), onnxruntime run and IOBinding, "
                                   "Numba per call and block, at several stream counts; print ratios against the "
                                   "FLOP floor and onnxruntime measured in the same run.")
    from edge.benchmark import add_arguments
    add_arguments(b)
    b.set_defaults(func=cmd_bench)
    r = sub.add_parser("replay", help="stream a recorded file through a bundle: summary, outputs, plot",
                       description=REPLAY_DESCRIPTION, epilog=REPLAY_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from edge.replay import add_arguments as add_replay_arguments
    add_replay_arguments(r)
    r.set_defaults(func=cmd_replay)
    e = sub.add_parser("eval", help="score a model beside its baselines or peers on real data",
                       description="Score a model on real data beside its baselines or peers, computed in the same run: "
                                   "imu-attitude (BROAD inclination error), har-watch (activity classification), anomaly "
                                   "(events on ETT, BROAD, KDD-TSAD), ett-forecast (ETT test splits) or nab (the Numenta "
                                   "Anomaly Benchmark). `edge eval TASK --help` lists a task's options.",
                       epilog="examples:\n  edge eval imu-attitude\n  edge eval imu-attitude --rate 50 --peers VQF\n"
                              "  edge eval har-watch                                   # shipped bundles -> docs/\n"
                              "  edge eval har-watch --bundles runs/har/*.onnx --out runs/har\n"
                              "  edge eval anomaly                 # injected + labelled anomalies -> docs/anomaly-results.md\n"
                              "  edge eval anomaly --sets ett kdd --seeds 3 --out /tmp/anomaly\n"
                              "  edge eval ett-forecast            # 4 ETT sets x 2 settings -> docs/forecast-results.md\n"
                              "  edge eval ett-forecast --forecast-bundles /tmp/ett --out /tmp/ett   # freshly trained\n"
                              "  edge eval nab --json              # NAB standard / low-FP / low-FN scores of the detector\n"
                              "  edge eval nab --results-dir runs/nab   # per-row scores in NAB's results layout\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    import importlib
    tasks = e.add_subparsers(dest="task", metavar="TASK", required=True)
    modules = {task: importlib.import_module(module) for task, module in EVALUATIONS.items()}
    shared = [m for m in modules.values() if not getattr(m, "OWN_OPTIONS", False)]
    for task, module in modules.items():
        # the older evaluations share one set of options; a module with OWN_OPTIONS has only its own
        t = tasks.add_parser(task, help=(module.__doc__ or "").strip().splitlines()[0],
                             description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        for m in [module] if getattr(module, "OWN_OPTIONS", False) else shared:
            m.add_arguments(t)
    e.set_defaults(func=cmd_eval)
    t = sub.add_parser("train", help="train a shipped model from its data (needs torch)",
                       description="Train one of the shipped models; `edge train imu-attitude --help` lists its options.")
    t.add_argument("task", choices=sorted(TRAINERS), help="which model")
    t.add_argument("options", nargs=argparse.REMAINDER, help="the task's own options (see `edge train TASK --help`)")
    t.set_defaults(func=cmd_train)
    d = sub.add_parser("demo", help="build, export and stream each model of the zoo (needs torch)",
                       description="A tour of the zoo: builds each model, checks that its parallel and streaming "
                                   "faces agree, exports it as a bundle, and streams it on Numba and onnxruntime.")
    d.add_argument("--steps", type=int, default=2000, help="samples to stream per model (default 2000)")
    d.add_argument("--out", default=None, help="folder for the bundles (default: a temporary folder)")
    d.set_defaults(func=cmd_demo)
    # commands of other subsystems: each module's add_subparser(sub) adds its parser (cheap imports only)
    from edge.firmware_sim.fit import add_subparser as add_fit; add_fit(sub)
    from edge.firmware_sim.export_c import add_subparser as add_export_c; add_export_c(sub)
    from edge.tasks.dialogue.cli import add_subparser as add_chat; add_chat(sub)
    from edge.daemon.cli import add_subparser as add_run; add_run(sub)
    from edge.firmware_sim.mqtt_sim import add_subparser as add_sim; add_sim(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from edge.bundle import BundleError
    from edge.io.recordings import RecordingError
    from edge.runtime import InputError
    try:
        return args.func(args)
    except (BundleError, InputError, RecordingError, FileNotFoundError) as e:
        print(f"edge {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge inspect m.onnx | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
