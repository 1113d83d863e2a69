"""The step program as a torch module, so that torch's exporter writes it as an ONNX graph whose
initializers carry the program's weight names (the Numba engine reads them back by name).

forward(x, *states) -> (y, *next_states), states in the order of the state spec.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from edge.models.activations import ACTIVATIONS
from edge.models.attitude import FILTER_STATE, attitude_filter_step, tilt_correct


def _pair(s, dim):
    """float32 hi + lo (stacked along dim) as one float64."""
    hi, lo = s.double().unbind(dim)
    return hi + lo


def _split(v, dim):
    """float64 -> float32 hi + lo stacked along dim: hi = f32(v), lo = f32(v − hi)."""
    hi = v.float()
    return torch.stack([hi, (v - hi.double()).float()], dim)


class ProgramModule(nn.Module):
    def __init__(self, program: dict, weights: dict, state_spec: list):
        super().__init__()
        self.program, self.state_spec = program, state_spec
        for name, w in weights.items():
            self.register_buffer(name, torch.from_numpy(w.copy()))  # names survive as initializer names

    def w(self, name):
        return getattr(self, name) if name else None

    def forward(self, x, *states):
        state = {spec["name"]: s for spec, s in zip(self.state_spec, states)}
        regs = {"x": x}
        for op in self.program["ops"]:
            kind = op["op"]
            if kind == "dense":
                regs[op["out"]] = ACTIVATIONS[op["act"]](F.linear(regs[op["in"]], self.w(op["weight"]), self.w(op["bias"])))
            elif kind == "affine":
                regs[op["out"]] = regs[op["in"]] * self.w(op["scale"]) + self.w(op["shift"])
            elif kind == "act":
                regs[op["out"]] = ACTIVATIONS[op["act"]](regs[op["in"]])
            elif kind == "add":
                regs[op["out"]] = regs[op["a"]] + regs[op["b"]]
            elif kind == "concat":
                regs[op["out"]] = torch.cat([regs[r] for r in op["ins"]], -1)
            elif kind == "glu":
                regs[op["out"]] = F.glu(regs[op["in"]], dim=-1)
            elif kind == "l2norm":
                v = regs[op["in"]]
                regs[op["out"]] = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            elif kind == "lstm":
                h, c = state[op["state_h"]], state[op["state_c"]]
                gates = F.linear(regs[op["in"]], self.w(op["w_ih"]), self.w(op["bias"])) + F.linear(h, self.w(op["w_hh"]))
                i, f, g, o = gates.chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                state[op["state_h"]], state[op["state_c"]], regs[op["out"]] = h, c, h
            elif kind == "gru":
                h = state[op["state_h"]]
                xr, xz, xn = F.linear(regs[op["in"]], self.w(op["w_ih"]), self.w(op["b_ih"])).chunk(3, -1)
                hr, hz, hn = F.linear(h, self.w(op["w_hh"]), self.w(op["b_hh"])).chunk(3, -1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = (1 - z) * torch.tanh(xn + r * hn) + z * h
                state[op["state_h"]], regs[op["out"]] = h, h
            elif kind == "lmu_memory":
                m = state[op["state_m"]]  # (B, ch, d)
                m = F.linear(m, self.w(op["a"])) + regs[op["in"]][..., None] * self.w(op["b"])
                state[op["state_m"]], regs[op["out"]] = m, m.flatten(1)
            elif kind == "recurrent_lmu":
                m, h, x_in = state[op["state_m"]], state[op["state_h"]], regs[op["in"]]
                u = F.linear(torch.cat([x_in, h, m.flatten(1)], -1), self.w(op["encoder"]))
                m = F.linear(m, self.w(op["a"])) + u[..., None] * self.w(op["b"])
                h = torch.tanh(F.linear(torch.cat([x_in, h, m.flatten(1)], -1), self.w(op["weight"]), self.w(op["bias"])))
                state[op["state_m"]], state[op["state_h"]], regs[op["out"]] = m, h, h
            elif kind == "s4d":
                u = regs[op["in"]]
                xr, xi, u_ = state[op["state_xr"]], state[op["state_xi"]], u[..., None]
                ar, ai, br, bi = (self.w(op[k]) for k in ("ar", "ai", "br", "bi"))
                xr, xi = ar * xr - ai * xi + br * u_, ar * xi + ai * xr + bi * u_
                y = 2 * (self.w(op["cr"]) * xr - self.w(op["ci"]) * xi).sum(-1) + self.w(op["d"]) * u
                state[op["state_xr"]], state[op["state_xi"]] = xr, xi
                regs[op["out"]] = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
            elif kind == "lif":
                v = state[op["state_v"]]
                h = v + (regs[op["in"]] - v) / op["tau"]
                s = (h >= op["threshold"]).to(h.dtype)
                state[op["state_v"]], regs[op["out"]] = h * (1 - s), s
            elif kind == "conv":
                window = torch.cat([state[op["state_buf"]], regs[op["in"]][..., None]], -1)  # (B, I, k)
                y = F.linear(window.flatten(1), self.w(op["weight"]).flatten(1), self.w(op["bias"]))
                state[op["state_buf"]], regs[op["out"]] = window[..., 1:], y
            elif kind == "running_mean":  # sum [2, n] and count [2]: float32 hi + lo pairs, in float64
                total = _pair(state[op["state_sum"]], 1) + regs[op["in"]].double()
                count = _pair(state[op["state_count"]], 1) + 1.0
                state[op["state_sum"]], state[op["state_count"]] = _split(total, 1), _split(count, 1)
                regs[op["out"]] = (total / count[:, None]).float()
            elif kind == "attitude_filter":
                x_in = regs[op["in"]]
                q, gravity, s = attitude_filter_step(op, {k: state[op[f"state_{k}"]] for k in FILTER_STATE},
                                                     x_in[:, :3], x_in[:, 3:6])
                for k in FILTER_STATE:
                    state[op[f"state_{k}"]] = s[k]
                regs[op["out"]], regs[op["gravity"]] = q, gravity
            elif kind == "softmax":
                regs[op["out"]] = torch.softmax(regs[op["in"]], -1)
            elif kind == "tilt_correct":
                regs[op["out"]] = tilt_correct(regs[op["q"]], regs[op["r"]])
            else:
                raise ValueError(f"unknown op {kind!r}")
        return (regs[self.program["output"]], *(state[spec["name"]] for spec in self.state_spec))
