"""Lower a zoo model to a step program (docs/bundle.md): a straight-line list of kernels over
named per-stream registers, with weights as named float32 arrays.

BatchNorm is folded into the dense or conv it follows; elsewhere it becomes an `affine`. A module
with no lowering is refused by name and path: export never writes what it cannot represent.
"""
import numpy as np
import torch
from torch import nn

from edge.models import (GRU, LIF, LMU, LSTM, S4D, Activation, CausalConv1d, ChannelNorm, ClassifierHead,
                         ForecastHead, Pointwise, QuaternionHead, RecurrentLMU, Residual, SpikingLMU, Stack)
from edge.models.attitude import FILTER_STATE, AttitudeFilter, LearnedAttitude


class ExportError(ValueError):
    pass


def _np(t) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().astype(np.float32)


def bn_scale_shift(bn: nn.BatchNorm1d):
    """Eval-mode BatchNorm as y = x·scale + shift (float64 until the final cast)."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    w = bn.weight.double() if bn.affine else torch.ones_like(var)
    b = bn.bias.double() if bn.affine else torch.zeros_like(var)
    scale = w / torch.sqrt(var + bn.eps)
    return scale, b - mean * scale


class Program:
    def __init__(self, input_size: int):
        self.registers = {"x": input_size}
        self.ops, self.weights, self.state = [], {}, []
        self.shared = set()  # registers read again later (a residual's input): never folded into

    def register(self, size: int) -> str:
        name = f"r{len(self.registers)}"
        self.registers[name] = int(size)
        return name

    def weight(self, path: str, field: str, tensor) -> str:
        name = f"{path}/{field}" if path else field
        self.weights[name] = tensor if isinstance(tensor, np.ndarray) else _np(tensor)
        return name

    def add_state(self, name: str, shape) -> str:
        self.state.append({"name": name, "shape": [int(s) for s in shape], "init": 0.0})
        return name

    def emit(self, op: str, out_size: int | None, **fields) -> str:
        if out_size is not None:
            fields["out"] = self.register(out_size)
        self.ops.append({"op": op, **fields})
        return fields.get("out")

    def as_dict(self, output: str) -> dict:
        return {"registers": self.registers, "output": output, "ops": self.ops}


def lower(model: nn.Module, input_size: int):
    """-> (program dict, weights {name: float32 array}, state spec list)."""
    if model.training:
        raise ExportError("export needs model.eval(): BatchNorm folding uses the running statistics")
    p = Program(input_size)
    out = _lower(p, model, "x", path="", state="")
    _share_identical_weights(p)
    return p.as_dict(out), p.weights, p.state


def _share_identical_weights(p: Program) -> None:
    """One name per distinct array (e.g. the Ā every LMU of one order and θ shares). Needed, not just
    thrifty: torch's exporter merges identical initializers under one name, and the Numba engine
    looks weights up by the names in the program."""
    first = {}
    alias = {}
    for name, w in p.weights.items():
        key = (w.shape, w.tobytes())
        alias[name] = first.setdefault(key, name)
    for op in p.ops:  # register names ("x", "r3") never collide with weight names ("path/field")
        for field, value in op.items():
            if isinstance(value, str) and value in alias:
                op[field] = alias[value]
    p.weights = {name: w for name, w in p.weights.items() if alias[name] == name}


def _size(p: Program, reg: str) -> int:
    return p.registers[reg]


def _fold_bn_into_last(p: Program, x: str, bn: nn.BatchNorm1d) -> bool:
    """Fold a BatchNorm into the op that just wrote its input x, if that op is linear."""
    last = p.ops[-1] if p.ops else None
    if (last is None or last.get("out") != x or x in p.shared or last["op"] not in ("dense", "conv")
            or last.get("act", "identity") != "identity"):
        return False
    scale, shift = bn_scale_shift(bn)
    w = torch.from_numpy(p.weights[last["weight"]]).double()
    b = torch.from_numpy(p.weights[last["bias"]]).double() if last["bias"] else torch.zeros(w.shape[0], dtype=torch.float64)
    p.weights[last["weight"]] = _np(w * scale.view(-1, *([1] * (w.dim() - 1))))
    last["bias"] = last["bias"] or last["weight"].rsplit("/", 1)[0] + "/bias_folded"
    p.weights[last["bias"]] = _np(b * scale + shift)
    return True


def _dense(p, x, linear: nn.Linear, path, act="identity"):
    bias = p.weight(path, "bias", linear.bias) if linear.bias is not None else None
    return p.emit("dense", linear.out_features, **{"in": x}, weight=p.weight(path, "weight", linear.weight),
                  bias=bias, act=act)


def _affine(p, x, bn: nn.BatchNorm1d, path):
    if _fold_bn_into_last(p, x, bn):
        return x
    scale, shift = bn_scale_shift(bn)
    return p.emit("affine", _size(p, x), **{"in": x}, scale=p.weight(path, "scale", _np(scale)),
                  shift=p.weight(path, "shift", _np(shift)))


def _lif(p, x, lif: LIF, state):
    v = p.add_state(state + "v", [lif.channels])
    return p.emit("lif", lif.channels, **{"in": x}, state_v=v, tau=lif.tau, threshold=lif.threshold)


def _memory(p, u, memory, path, state):
    m = p.add_state(state + "m", [memory.channels, memory.order])
    return p.emit("lmu_memory", memory.channels * memory.order, **{"in": u}, state_m=m,
                  a=p.weight(path, "A_bar", memory.A_bar), b=p.weight(path, "B_bar", memory.B_bar))


def _attitude_filter(p, x, m: AttitudeFilter, state):
    """-> (q register, gravity register)."""
    states = {f"state_{k}": p.add_state(state + k, [n]) for k, n in FILTER_STATE.items()}
    gravity = p.register(3)
    q = p.emit("attitude_filter", 4, **{"in": x}, gravity=gravity, **states, **m.constants())
    return q, gravity


def _learned_attitude(p, x, m: LearnedAttitude, path, state):
    q, gravity = _attitude_filter(p, x, m.filter, state + "filter.")
    features = p.emit("concat", 9, ins=[x, gravity])
    features = p.emit("affine", 9, **{"in": features}, scale=p.weight(path, "feature_scale", m.feature_scale),
                      shift=p.weight(path, "feature_shift", np.zeros(9, np.float32)))
    h = _lower(p, m.net, features, f"{path}/net", state + "net.")
    # r = max · tanh(W h / max + b / max): the 1/max folded into the dense, the max an affine
    lin, limit = m.correction, m.max_correction
    r = p.emit("dense", 3, **{"in": h}, weight=p.weight(path, "correction_weight", lin.weight.double() / limit),
               bias=p.weight(path, "correction_bias", lin.bias.double() / limit), act="tanh")
    r = p.emit("affine", 3, **{"in": r}, scale=p.weight(path, "correction_limit", np.full(3, limit, np.float32)),
               shift=p.weight(path, "correction_shift", np.zeros(3, np.float32)))
    return p.emit("tilt_correct", 4, q=q, r=r)


def _lower(p: Program, m: nn.Module, x: str, path: str, state: str) -> str:
    sub = (lambda name: f"{path}/{name}" if path else name)  # "/": torch buffer names cannot hold "."
    if isinstance(m, Stack):
        for i, layer in enumerate(m.layers):
            x = _lower(p, layer, x, sub(f"layers/{i}"), f"{state}{i}.")
        return x
    if isinstance(m, Residual):
        p.shared.add(x)
        y = _lower(p, m.inner, x, sub("inner"), state)
        return p.emit("add", _size(p, x), a=x, b=y)
    if isinstance(m, Pointwise):
        inner = m.module
        if isinstance(inner, nn.Linear):
            return _dense(p, x, inner, sub("module"))
        if isinstance(inner, ChannelNorm):
            return _affine(p, x, inner.bn, sub("module/bn"))
        if isinstance(inner, Activation):
            last = p.ops[-1] if p.ops else None
            if last and last["op"] == "dense" and last["act"] == "identity" and last["out"] == x and x not in p.shared:
                last["act"] = inner.name  # fuse into the dense that produced x
                return x
            return p.emit("act", _size(p, x), **{"in": x}, act=inner.name)
        raise ExportError(f"cannot export Pointwise({type(inner).__name__}) at {path or 'the top'}")
    if isinstance(m, LSTM):
        r = m.rnn
        h, c = p.add_state(state + "h", [m.hidden_size]), p.add_state(state + "c", [m.hidden_size])
        return p.emit("lstm", m.hidden_size, **{"in": x}, state_h=h, state_c=c,
                      w_ih=p.weight(path, "w_ih", r.weight_ih_l0), w_hh=p.weight(path, "w_hh", r.weight_hh_l0),
                      bias=p.weight(path, "bias", r.bias_ih_l0.double() + r.bias_hh_l0.double()))
    if isinstance(m, GRU):
        r = m.rnn
        h = p.add_state(state + "h", [m.hidden_size])
        return p.emit("gru", m.hidden_size, **{"in": x}, state_h=h,
                      w_ih=p.weight(path, "w_ih", r.weight_ih_l0), w_hh=p.weight(path, "w_hh", r.weight_hh_l0),
                      b_ih=p.weight(path, "b_ih", r.bias_ih_l0), b_hh=p.weight(path, "b_hh", r.bias_hh_l0))
    if isinstance(m, LMU):
        u = _dense(p, x, m.encoder, sub("encoder"), act=m.encoder_activation)
        mem = _memory(p, u, m.memory, sub("memory"), state)
        cat = p.emit("concat", _size(p, mem) + _size(p, x), ins=[mem, x])
        return _dense(p, cat, m.hidden, sub("hidden"), act=m.activation)
    if isinstance(m, RecurrentLMU):
        mem = m.memory
        ms = p.add_state(state + "m", [mem.channels, mem.order])
        h = p.add_state(state + "h", [m.hidden_size])
        return p.emit("recurrent_lmu", m.hidden_size, **{"in": x}, state_m=ms, state_h=h,
                      a=p.weight(sub("memory"), "A_bar", mem.A_bar), b=p.weight(sub("memory"), "B_bar", mem.B_bar),
                      encoder=p.weight(path, "encoder", m.encoder.weight),
                      weight=p.weight(path, "weight", m.hidden.weight), bias=p.weight(path, "bias", m.hidden.bias))
    if isinstance(m, S4D):
        k = m.step_constants()
        xr = p.add_state(state + "xr", [m.channels, m.modes])
        xi = p.add_state(state + "xi", [m.channels, m.modes])
        y = p.emit("s4d", m.channels, **{"in": x}, state_xr=xr, state_xi=xi, d=p.weight(path, "D", m.D),
                   **{name: p.weight(path, name, k[name]) for name in ("ar", "ai", "br", "bi", "cr", "ci")})
        y = _dense(p, y, m.output, sub("output"))
        return p.emit("glu", m.channels, **{"in": y})
    if isinstance(m, CausalConv1d):
        conv = m.conv
        if m.kernel_size == 1:  # no history (its state is empty, so the bundle has none): a dense
            bias = p.weight(sub("conv"), "bias", conv.bias) if conv.bias is not None else None
            return p.emit("dense", conv.out_channels, **{"in": x}, bias=bias, act="identity",
                          weight=p.weight(sub("conv"), "weight", conv.weight[..., 0]))
        buf = p.add_state(state + "buf", [m.in_channels, m.kernel_size - 1])
        bias = p.weight(sub("conv"), "bias", conv.bias) if conv.bias is not None else None
        return p.emit("conv", conv.out_channels, **{"in": x}, state_buf=buf,
                      weight=p.weight(sub("conv"), "weight", conv.weight), bias=bias)
    if isinstance(m, LIF):
        return _lif(p, x, m, state)
    if isinstance(m, SpikingLMU):
        u = _dense(p, x, m.encoder, sub("encoder"))
        u = _lif(p, _affine(p, u, m.encoder_norm.bn, sub("encoder_norm/bn")), m.encoder_lif, state + "u.")
        mem = _memory(p, u, m.memory, sub("memory"), state)
        ms = _lif(p, _affine(p, mem, m.memory_norm.bn, sub("memory_norm/bn")), m.memory_lif, state + "ms.")
        cat = p.emit("concat", _size(p, ms) + _size(p, x), ins=[ms, x])
        h = _affine(p, _dense(p, cat, m.hidden, sub("hidden")), m.hidden_norm.bn, sub("hidden_norm/bn"))
        return _lif(p, h, m.hidden_lif, state + "h.")
    if isinstance(m, AttitudeFilter):
        q, gravity = _attitude_filter(p, x, m, state)
        return p.emit("concat", 7, ins=[q, gravity])
    if isinstance(m, LearnedAttitude):
        return _learned_attitude(p, x, m, path, state)
    if isinstance(m, QuaternionHead):
        return p.emit("l2norm", 4, **{"in": _dense(p, x, m.linear, sub("linear"))})
    if isinstance(m, ForecastHead):
        return _dense(p, x, m.linear, sub("linear"))
    if isinstance(m, ClassifierHead):
        logits = _dense(p, x, m.linear, sub("linear"))
        if m.running_mean:
            # float32 hi + lo pairs (rows of [2, n]): exact over 2^48 samples (docs/bundle.md)
            s, c = p.add_state(state + "sum", [2, m.classes]), p.add_state(state + "count", [2])
            logits = p.emit("running_mean", m.classes, **{"in": logits}, state_sum=s, state_count=c)
        return p.emit("softmax", m.classes, **{"in": logits}) if m.probabilities else logits
    raise ExportError(f"cannot export {type(m).__name__} at {path or 'the top'}: no step kernel for it")
