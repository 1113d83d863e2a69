"""Composing streaming layers.

Every sequence layer offers `init_state(B)`, `forward(x[B,T,C], state) -> (y, state)` and
`step(x[B,C], state) -> (y, state)`, with state a dict of tensors. `Pointwise` gives a stateless
per-sample module (Linear, BatchNorm, an activation) the same three methods, and `Stack` chains
layers, prefixing each layer's state names with its index ("0.h", "1.m", ...).
"""
import torch
from torch import nn

from edge.models.activations import activation as activation_fn


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name, self.fn = name, activation_fn(name)

    def forward(self, x):
        return self.fn(x)


class ChannelNorm(nn.Module):
    """BatchNorm over the last (channel) axis of (B, T, C) or (B, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x):
        return self.bn(x.transpose(1, 2)).transpose(1, 2) if x.dim() == 3 else self.bn(x)


class Pointwise(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def init_state(self, batch: int) -> dict:
        return {}

    def forward(self, x, state=None):
        return self.module(x), {}

    def step(self, x, state):
        return self.module(x), {}


def split_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def join_state(states) -> dict:
    return {f"{i}.{k}": v for i, s in enumerate(states) for k, v in s.items()}


class Stack(nn.Module):
    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def init_state(self, batch: int) -> dict:
        return join_state(layer.init_state(batch) for layer in self.layers)

    def _run(self, method: str, x, state):
        if method == "step" and state is None:
            state = self.init_state(x.shape[0])
        states = []
        for i, layer in enumerate(self.layers):  # a layer given None starts from its initial state
            x, s = getattr(layer, method)(x, None if state is None else split_state(state, f"{i}."))
            states.append(s)
        return x, join_state(states)

    def forward(self, x, state=None):  # (B, T, C) -> (B, T, O)
        return self._run("forward", x, state)

    def step(self, x, state):  # (B, C) -> (B, O)
        return self._run("step", x, state)


def unroll(layer, x, state=None):
    """Run `layer.step` over T (the streaming face): x (B, T, C) -> (B, T, O)."""
    state = state or layer.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


class Residual(nn.Module):
    """y = x + inner(x); the state is the inner layer's."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def init_state(self, batch: int) -> dict:
        return self.inner.init_state(batch)

    def forward(self, x, state=None):
        y, state = self.inner(x, state)
        return x + y, state

    def step(self, x, state):
        y, state = self.inner.step(x, state)
        return x + y, state
