"""Does a bundle fit a device, how fast, how much energy? (`edge fit`, docs/fit.md)

    from edge.firmware_sim.fit import load_profiles, budget
    b = budget(read_bundle("imu-attitude"), load_profiles()["cortex-m4f"], rate_hz=285.7)

Counts come from the ONNX graph itself: shapes inferred with batch 1, then MACs from every
MatMul/Gemm/Conv node (M·N·K; output size × input channels/group × kernel size) and the other
arithmetic nodes by their output elements. For a spiking bundle, the dense/conv ops fed by LIF
spikes are accumulates, not MACs: a spike selects a weight column, so each step costs
rate × weights accumulates, with the spike rate *measured* on a real recording by the integer
float step (the bundle's program with its LIF outputs as output, on the Numba engine).

Time per step = (MACs · cycles_per_mac + ACs · cycles_per_ac + other ops · cycles_per_op) / clock,
with the per-operation cycles of firmware_sim/profiles.toml (the Cortex-M4 figures calibrated
against QEMU's instruction count of the exported C step, docs/firmware.md).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

PROFILES = Path(__file__).with_name("profiles.toml")
ARITHS = ("int8", "fp32")
MATMUL_OPS = ("MatMul", "Gemm", "Conv")
# nodes that only move or reshape data: no arithmetic on the device
DATA_OPS = {"Shape", "Constant", "ConstantOfShape", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice",
            "Split", "Gather", "Transpose", "Cast", "Identity", "Flatten", "Expand"}
DEVICE_KEYS = ("title", "clock_hz", "ram_bytes", "flash_bytes", "active_w", "reserve_bytes", "cycles_per_mac",
               "cycles_per_ac", "cycles_per_op", "sources")


class ProfileError(ValueError):
    pass


def load_profiles(path=PROFILES) -> dict:
    """{name: profile} plus the energy table under the key "energy"; a bad file is one line."""
    import tomllib
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ProfileError(f"profiles {path}: {e}") from None
    devices = doc.get("device", {})
    for name, p in devices.items():
        missing = [k for k in DEVICE_KEYS if k not in p]
        if missing:
            raise ProfileError(f"profiles {path}: device {name!r} lacks {', '.join(missing)}")
        for k in ("cycles_per_mac", "cycles_per_ac"):
            if set(p[k]) != set(ARITHS):
                raise ProfileError(f"profiles {path}: device {name!r} {k} must give {' and '.join(ARITHS)}")
    if "energy" not in doc or "code_bytes" not in doc:
        raise ProfileError(f"profiles {path}: needs an [energy] table and code_bytes")
    return {"energy": doc["energy"], "devices": devices, "code_bytes": doc["code_bytes"]}


# ---- counting from the graph -------------------------------------------------------------------
def _infer(model):
    """The model with every tensor's shape inferred for a batch of one stream."""
    import onnx
    from onnx import shape_inference
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for vi in list(model.graph.input) + list(model.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_value = 1
    return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def graph_counts(model) -> dict:
    """MACs of the MatMul/Gemm/Conv nodes and element counts of the other arithmetic nodes, per
    step of one stream, from an onnx ModelProto. ``matmul_by_weight``: MACs per weight initializer."""
    import numpy as np
    m = _infer(model)
    shapes = {t.name: list(t.dims) for t in m.graph.initializer}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        # a symbolic dimension left by inference is the batch (the only dynamic one in a bundle)
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
    macs, by_weight, ops, by_type = 0, {}, 0, {}
    for node in m.graph.node:
        if node.op_type in DATA_OPS:
            continue
        known = [shapes.get(t) for t in [*node.input, node.output[0]] if t]
        if shapes.get(node.output[0]) is None or any(s is None for s in known):
            raise ValueError(f"node {node.name or node.op_type}: shape not inferred")
        size = int(np.prod(shapes[node.output[0]]))
        if node.op_type in MATMUL_OPS:
            a, w = shapes[node.input[0]], shapes[node.input[1]]
            if node.op_type == "Conv":  # weight [O, I/groups, k...]
                n = size * w[1] * int(np.prod(w[2:]))
            elif node.op_type == "Gemm":
                trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
                n = size * (a[0] if trans_a else a[-1])
            else:
                n = size * a[-1]
            macs += n
            by_weight[node.input[1]] = by_weight.get(node.input[1], 0) + n
        else:  # element-wise or a reduction: the larger of what it reads and writes
            n = max(int(np.prod(s)) for s in known)
            ops += n
            by_type[node.op_type] = by_type.get(node.op_type, 0) + n
    return {"macs": macs, "matmul_by_weight": by_weight, "other_ops": ops, "other_by_type": by_type}


def spiking_weights(program: dict) -> dict:
    """{weight name: LIF op index} for every dense/conv op whose input is (a concat of) spikes."""
    spikes, fed = {}, {}
    for i, op in enumerate(program["ops"]):
        if op["op"] == "lif":
            spikes[op["out"]] = i
        elif op["op"] == "concat" and all(r in spikes for r in op["ins"]):
            spikes[op["out"]] = spikes[op["ins"][0]]
        elif op["op"] in ("dense", "conv") and op["in"] in spikes:
            fed[op["weight"]] = spikes[op["in"]]
    return fed


def bundle_counts(bundle, spike_rates: dict | None = None) -> dict:
    """Per step of one stream: MACs, ACs (spiking), other ops; parameter, state and scratch bytes."""
    import numpy as np
    import onnx
    g = graph_counts(onnx.load_from_string(bundle.model_bytes))
    fed = spiking_weights(bundle.meta["program"])
    if fed and spike_rates is None:
        raise ValueError("a spiking bundle: its accumulates come from measured spike rates (give a recording)")
    acs, spiking_macs = 0.0, 0
    for name, lif in fed.items():
        # the graph's Gemm may read the weight through a Transpose: count by size, not by name
        n = g["matmul_by_weight"].get(name, int(bundle.weights[name].size))
        spiking_macs += n
        acs += spike_rates[lif] * n
    params = bundle.weights.values()
    regs = bundle.meta["program"]["registers"]
    return {
        "macs": g["macs"] - spiking_macs, "acs": acs, "dense_equivalent_macs": g["macs"], "other_ops": g["other_ops"],
        "spike_rates": spike_rates or {},
        "params": sum(int(w.size) for w in params),
        # int8: matrices at one byte per weight, vectors (biases, scales) as 32-bit words
        "param_bytes": {"fp32": sum(4 * int(w.size) for w in params),
                        "int8": sum(int(w.size) if np.ndim(w) >= 2 else 4 * int(w.size) for w in params)},
        "state_bytes": 4 * bundle.state_floats,      # fp32 words, or int32 fixed-point words
        "scratch_bytes": 4 * sum(regs.values()),
    }


def budget(counts: dict, profile: dict, energy: dict, arith: str = "int8", rate_hz: float | None = None,
           code_bytes: int = 0) -> dict:
    """The device's answer for one bundle: fits, µs per step, max rate, duty, streams, energy."""
    cycles = (counts["macs"] * profile["cycles_per_mac"][arith] + counts["acs"] * profile["cycles_per_ac"][arith]
              + counts["other_ops"] * profile["cycles_per_op"])
    step_s = cycles / profile["clock_hz"]
    flash = counts["param_bytes"][arith] + code_bytes
    ram_free = profile["ram_bytes"] - profile["reserve_bytes"] - counts["scratch_bytes"]
    by_ram = ram_free // counts["state_bytes"] if counts["state_bytes"] else (10 ** 9 if ram_free >= 0 else 0)
    duty = step_s * rate_hz if rate_hz else None
    by_time = math.floor(1.0 / duty) if duty else None
    streams = int(min(by_ram, by_time) if by_time is not None else by_ram)
    e = energy
    arith_pj = (counts["macs"] * e[f"{arith}_mac_pj"] + counts["acs"] * e[f"{arith}_ac_pj"])
    return {
        "arith": arith, "cycles": cycles, "us_per_step": step_s * 1e6, "max_rate_hz": 1.0 / step_s if step_s else math.inf,
        "duty": duty, "flash_bytes": flash, "ram_bytes_one_stream": counts["scratch_bytes"] + counts["state_bytes"],
        "fits": flash <= profile["flash_bytes"] and ram_free >= counts["state_bytes"] and (duty is None or duty <= 1),
        "streams": max(streams, 0), "energy_arith_nj": arith_pj / 1000.0,
        "energy_device_uj": profile["active_w"] * step_s * 1e6,
    }


# ---- command line ------------------------------------------------------------------------------
def shipped_bundles() -> list:
    from edge.bundle import BUNDLE_DIR
    return sorted(BUNDLE_DIR.glob("*.onnx"))


def measured_spike_rates(bundle, x=None) -> dict:
    """{LIF op index: spikes per neuron per step} of the float step on raw inputs x [T, C], a
    recording file, or (None) the recordings the bundle was trained on: the bundle's program run
    with its LIF outputs as the output (the probe of edge.tasks.classify.evaluate), on Numba."""
    import numpy as np
    from edge.engine.numba_engine import NumbaExecutor
    from edge.tasks.classify.evaluate import spike_probe
    from edge.firmware_sim.intarith import calibration_inputs, normalised
    x = normalised(bundle.meta, calibration_inputs(bundle, x, samples=10 ** 9))
    probe = NumbaExecutor(spike_probe(bundle.meta), bundle.weights, bundle.meta["state"])
    spikes = probe.block(x[:, None, :], probe.init_state(1))[:, 0]       # [T, all LIF neurons]
    rates, k = {}, 0
    for i, op in enumerate(bundle.meta["program"]["ops"]):
        if op["op"] == "lif":
            n = bundle.meta["program"]["registers"][op["out"]]
            rates[i] = float(spikes[:, k:k + n].mean())
            k += n
    return rates


def counts_for(bundle, recording=None) -> dict:
    """bundle_counts with the spike rates measured on ``recording`` (a file or raw x [T, C]) when
    the bundle spikes."""
    rates = measured_spike_rates(bundle, recording) if spiking_weights(bundle.meta["program"]) else None
    return bundle_counts(bundle, rates)


def table_rows(name: str, counts: dict, profiles: dict, rate_hz, arith: str) -> list:
    rows = []
    for dev, p in profiles["devices"].items():
        b = budget(counts, p, profiles["energy"], arith, rate_hz, profiles["code_bytes"])
        rows.append([name, dev, arith, f"{b['flash_bytes'] / 1024:.1f}", f"{b['ram_bytes_one_stream'] / 1024:.2f}",
                     "yes" if b["fits"] else "no", f"{b['us_per_step']:.1f}", f"{b['max_rate_hz']:,.0f}",
                     "-" if b["duty"] is None else f"{100 * b['duty']:.2f} %", f"{b['streams']:,}",
                     f"{b['energy_arith_nj']:.2f}", f"{b['energy_device_uj']:.2f}"])
    return rows


HEADER = ["bundle", "device", "arith", "flash KiB", "RAM KiB/stream", "fits", "µs/step", "max Hz", "duty @rate",
          "streams @rate", "arith nJ/step", "device µJ/step"]


def markdown(rows) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def write_docs(path, profiles) -> None:
    from edge.bundle import read_bundle
    lines = ["# Does it fit? Every shipped bundle on every device profile", "",
             "Generated by `edge fit --all` (firmware_sim/fit.py) from firmware_sim/profiles.toml; do not edit.",
             "Counts from each bundle's ONNX graph (MatMul/Gemm/Conv MACs; other arithmetic nodes by element); "
             "`duty`/`streams` at the bundle's own sample rate; energy: arithmetic by Horowitz 2014 (45 nm) and "
             "device = active power × time. Flash = parameters (int8: matrices 1 B/weight, vectors 4 B) + "
             f"{profiles['code_bytes']:,} B of code (the exported step's measured .text).", ""]
    rows, notes = [], []
    for path_b in shipped_bundles():
        try:
            b = read_bundle(path_b)
            c = counts_for(b)
        except ValueError as e:  # another bundle format, or no data for its spike rates
            notes.append(f"- {path_b.stem}: not budgeted: {getattr(e, 'problem', e)}")
            continue
        name = b.meta.get("name") or path_b.stem
        notes.append(f"- {name}: {c['macs']:,} MACs, {c['acs']:,.0f} ACs, {c['other_ops']:,} other ops per step; "
                     f"state {c['state_bytes']:,} B/stream, scratch {c['scratch_bytes']:,} B")
        for arith in ARITHS:
            rows += table_rows(name, c, profiles, b.meta.get("sample_rate_hz"), arith)
    Path(path).write_text("\n".join(lines + notes + ["", markdown(rows), ""]))


EPILOG = """\
examples:
  edge fit imu-attitude --device cortex-m4f
      flash, RAM, µs per step, max rate, streams and energy of the shipped attitude model
  edge fit my.onnx --device esp32-s3 --rate 100 --arith fp32
      a bundle of yours at 100 Hz in float32
  edge fit spiking.onnx --device cortex-m7 --recording walk.csv
      a spiking bundle: accumulates from spike rates measured on the recording (float step)
  edge fit --all
      regenerate docs/fit.md: every shipped bundle on every profile
  edge fit --list
      the device profiles and where their numbers come from"""


def add_subparser(sub) -> None:
    import argparse

    from edge.argtypes import positive_float
    p = sub.add_parser("fit", help="does a bundle fit a device: memory, µs per step, rate, streams, energy",
                       description="Budget of one bundle on one device profile (firmware_sim/profiles.toml): "
                                   "parameter bytes (fp32, int8), state bytes per stream, scratch, MACs per step from "
                                   "the ONNX graph, accumulates from measured spike rates for spiking bundles; then "
                                   "fits or not, µs per step, max sample rate, duty cycle and streams at a rate, "
                                   "energy per inference.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="an .onnx bundle or a shipped bundle's name")
    p.add_argument("--device", metavar="NAME", help="a profile name (see --list)")
    p.add_argument("--rate", type=positive_float, metavar="HZ",
                   help="sample rate (default: the bundle's own, if it has one)")
    p.add_argument("--arith", choices=ARITHS, default="int8", help="arithmetic on the device (default int8)")
    p.add_argument("--recording", metavar="FILE", help="recording for measured spike rates (spiking bundles; "
                   "default: the recordings a shipped bundle was trained on)")
    p.add_argument("--profiles", default=str(PROFILES), metavar="TOML", help="profiles file (default: the shipped one)")
    p.add_argument("--all", metavar="MD", nargs="?", const="docs/fit.md",
                   help="write the table of every shipped bundle on every profile (default docs/fit.md)")
    p.add_argument("--list", action="store_true", help="list the device profiles with their sources")
    p.add_argument("--json", action="store_true", help="print the counts and budget as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    try:
        profiles = load_profiles(args.profiles)
    except ProfileError as e:
        print(f"edge fit: {e}", file=sys.stderr)
        return 2
    if args.list:
        for name, p in profiles["devices"].items():
            print(f"{name:<12} {p['title']}: {p['clock_hz'] / 1e6:g} MHz, {p['ram_bytes'] / 1024:g} KiB RAM, "
                  f"{p['flash_bytes'] / 1024:g} KiB flash")
            for s in p["sources"]:
                print(f"{'':<13}- {s}")
        print(f"energy       {profiles['energy']['source']}")
        return 0
    if args.all:
        write_docs(args.all, profiles)
        print(f"wrote {args.all}")
        return 0
    if not args.bundle or not args.device:
        print("edge fit: give a BUNDLE and --device NAME (or --all, or --list)", file=sys.stderr)
        return 2
    if args.device not in profiles["devices"]:
        print(f"edge fit: no device profile {args.device!r} (have: {', '.join(profiles['devices'])})", file=sys.stderr)
        return 2
    from edge.bundle import read_bundle
    b = read_bundle(args.bundle)
    try:
        c = counts_for(b, args.recording)
    except ValueError as e:
        print(f"edge fit: {b.path}: {e}", file=sys.stderr)
        return 2
    rate = args.rate or b.meta.get("sample_rate_hz")
    p = profiles["devices"][args.device]
    r = budget(c, p, profiles["energy"], args.arith, rate, profiles["code_bytes"])
    if args.json:
        print(json.dumps({"counts": c, "budget": r, "device": args.device}, indent=2, default=float))
        return 0
    print(f"{b.meta.get('name') or b.path} on {p['title']} ({args.arith})")
    print(f"  per step     {c['macs']:,} MACs, {c['acs']:,.0f} ACs, {c['other_ops']:,} other ops (from the ONNX graph)")
    if c["spike_rates"]:
        print("  spike rates  " + ", ".join(f"op {k}: {v:.3f}" for k, v in c["spike_rates"].items()))
    print(f"  parameters   {c['params']:,}: {c['param_bytes']['fp32']:,} B fp32, {c['param_bytes']['int8']:,} B int8")
    print(f"  state        {c['state_bytes']:,} B per stream; scratch {c['scratch_bytes']:,} B")
    print(f"  flash        {r['flash_bytes']:,} of {p['flash_bytes']:,} B; RAM {r['ram_bytes_one_stream']:,} B for "
          f"one stream of {p['ram_bytes'] - p['reserve_bytes']:,} B free → {'fits' if r['fits'] else 'DOES NOT FIT'}")
    print(f"  time         {r['us_per_step']:.1f} µs per step ({r['cycles']:,.0f} cycles at {p['clock_hz'] / 1e6:g} MHz); "
          f"max {r['max_rate_hz']:,.0f} Hz")
    if rate:
        print(f"  at {rate:g} Hz   duty {100 * r['duty']:.2f} %, {r['streams']:,} streams per device")
    print(f"  energy       {r['energy_arith_nj']:.2f} nJ arithmetic (Horowitz 45 nm), "
          f"{r['energy_device_uj']:.2f} µJ device (active power × time) per step")
    return 0
