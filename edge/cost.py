"""What one step costs, counted from the step program: multiply-accumulates, transcendental
calls, parameter and state bytes. Used by `edge inspect`, `edge bench` (the FLOP floor) and the
device budgets."""
import math

import numpy as np

TRANSCENDENTAL_ACTS = ("tanh", "sigmoid", "gelu")


def _size(shape) -> int:
    return int(math.prod(shape))


def op_macs(op: dict, registers: dict, weights: dict, state: dict) -> int:
    """Multiply-accumulates of one op for one stream (elementwise scalings count as one MAC each)."""
    kind, w = op["op"], (lambda k: weights[op[k]])
    if kind == "dense":
        return w("weight").size
    if kind == "conv":
        return w("weight").size
    if kind == "lstm" or kind == "gru":
        return w("w_ih").size + w("w_hh").size
    if kind == "lmu_memory":
        ch_d = _size(state[op["state_m"]])
        return ch_d * w("a").shape[0] + ch_d
    if kind == "recurrent_lmu":
        ch_d = _size(state[op["state_m"]])
        return w("encoder").size + ch_d * w("a").shape[0] + ch_d + w("weight").size
    if kind == "s4d":
        modes = w("ar").size
        return 4 * modes + 2 * modes + 2 * modes + w("d").size  # rotation, input, readout, skip
    if kind in ("affine", "glu", "l2norm", "running_mean", "lif", "softmax"):
        return registers[op["out"]]
    return 0  # add, concat, act: no multiplies


def step_cost(meta: dict, weights: dict) -> dict:
    program = meta["program"]
    state = {s["name"]: s["shape"] for s in meta["state"]}
    regs = program["registers"]
    per_op = {}
    for op in program["ops"]:
        per_op[op["op"]] = per_op.get(op["op"], 0) + op_macs(op, regs, weights, state)
    params = sum(np.asarray(v).size for v in weights.values())
    state_floats = sum(_size(s) for s in state.values())
    return {
        "macs": sum(per_op.values()),
        "macs_by_op": per_op,
        "flops": 2 * sum(per_op.values()),
        "parameters": params,
        "parameter_bytes_fp32": 4 * params,
        "parameter_bytes_int8": params,
        "state_floats": state_floats,
        "state_bytes": 4 * state_floats,
        "scratch_bytes": 4 * sum(regs.values()),
    }
