"""Does a bundle fit a device, how fast, how much energy? (`edge fit`, docs/fit.md)

    from edge.firmware_sim.fit import load_profiles, budget
    b = budget(read_bundle("imu-attitude"), load_profiles()["cortex-m4f"], rate_hz=285.7)

Counts come from the ONNX graph itself: shapes inferred with batch 1, then MACs from every
MatMul/Gemm/Conv node (M·N·K; output size × input channels/group × kernel size) and the other
arithmetic nodes by their output elements. For a spiking bundle, the dense/conv ops fed by LIF
spikes are accumulates, not MACs: a spike selects a weight column, so each step costs
rate × weights accumulates, with the spike rate *measured* on a real recording by the integer
reference (firmware_sim.intarith), the arithmetic the device runs.

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
    if "energy" not in doc:
        raise ProfileError(f"profiles {path}: no [energy] table")
    return {"energy": doc["energy"], "devices": devices}


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
