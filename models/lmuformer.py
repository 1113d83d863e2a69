"""LMUFormer and Spiking LMUFormer (Liu, Datta, Li, Beerel 2024), causal and streamable.

    patch embedding (causal convs) → depth × [x + token mixer(x); x + channel mixer(x)] → head

Differences from the reference code, on purpose: every convolution is causal (the reference's
centred kernels look 5 frames ahead), nothing depends on a fixed sequence length, and the
streaming step applies exactly the BatchNorms and LIF neurons the parallel face applies, in O(1)
per step. BatchNorm acts on the channel axis and is folded into neighbouring weights at export.

Two departures from the paper's ANN LMUFormer are options, off by default because the shipped
bundles were trained without them (measured in docs/models.md): the LMU encoder is linear
(`encoder_activation="relu"` is the paper's u = ReLU(W_u x)), and the channel mixer ends at its
BatchNorm (`mixer_activation="relu"` adds the reference ConvFFN's ReLU after fc2's BatchNorm).
"""
import torch
from torch import nn

from edge.models.conv import CausalConv1d
from edge.models.lmu import LMU, LegendreMemory
from edge.models.spiking import LIF
from edge.models.stack import Activation, ChannelNorm, Pointwise, Residual, Stack


def _norm(channels):
    return Pointwise(ChannelNorm(channels))


def _act(name):
    return Pointwise(Activation(name))


def _linear(i, o, bias=True):
    return Pointwise(nn.Linear(i, o, bias=bias))


def conv_patch_embedding(in_channels, dim, layers=4, kernel_size=3):
    """[causal conv → ReLU → BN] × layers, then x + conv(x) (the relative-position conv)."""
    parts, c = [], in_channels
    for _ in range(layers):
        parts += [CausalConv1d(c, dim, kernel_size, bias=False), _act("relu"), _norm(dim)]
        c = dim
    return Stack(*parts, Residual(CausalConv1d(dim, dim, kernel_size)))


def spiking_patch_embedding(in_channels, dim, layers=4, kernel_size=3):
    """conv, then [BN → LIF → conv] × (layers − 1), then x + conv(LIF(BN(x)))."""
    parts = [CausalConv1d(in_channels, dim, kernel_size, bias=False)]
    for _ in range(layers - 1):
        parts += [_norm(dim), LIF(dim), CausalConv1d(dim, dim, kernel_size, bias=False)]
    rpe = Stack(_norm(dim), LIF(dim), CausalConv1d(dim, dim, kernel_size))
    return Stack(*parts, Residual(rpe))


def lmu_token_mixer(dim, order, theta, encoder_activation="identity"):
    """BN(W_o · ReLU(W_h [m; x])) with m the Legendre memory of f_u(W_u x)."""
    return Stack(LMU(dim, dim, order, theta, activation="relu", encoder_activation=encoder_activation),
                 _linear(dim, dim), _norm(dim))


def conv_channel_mixer(dim, ratio=4, output_activation="identity"):
    """f(BN(W_2 · GELU(BN(W_1 x)))), 1×1 convs dim → ratio·dim → dim: pointwise in time, no state."""
    parts = [_linear(dim, ratio * dim), _norm(ratio * dim), _act("gelu"), _linear(ratio * dim, dim), _norm(dim)]
    return Stack(*parts, *([_act(output_activation)] if output_activation != "identity" else []))


class SpikingLMU(nn.Module):
    """The spiking LMU cell: every nonlinearity a BN + LIF, the memory itself linear and real-valued
    (as in the reference code; a spike inside the recurrence would rule out the FFT):
        u = LIF(BN(W_u x));  m = LegendreMemory(u);  h = LIF(BN(W_h [LIF(BN(m)); x]))
    """

    def __init__(self, input_size, hidden_size, order, theta):
        super().__init__()
        self.encoder, self.encoder_norm, self.encoder_lif = nn.Linear(input_size, 1), ChannelNorm(1), LIF(1)
        self.memory = LegendreMemory(1, order, theta)
        self.memory_norm, self.memory_lif = ChannelNorm(order), LIF(order)
        self.hidden = nn.Linear(order + input_size, hidden_size)
        self.hidden_norm, self.hidden_lif = ChannelNorm(hidden_size), LIF(hidden_size)

    def init_state(self, batch: int) -> dict:
        lifs = {"u": self.encoder_lif, "ms": self.memory_lif, "h": self.hidden_lif}
        state = {f"{k}.v": lif.init_state(batch)["v"] for k, lif in lifs.items()}
        return {**state, "m": self.memory.init_state(batch)["m"]}

    def _run(self, x, state, lif_method, memory_method):
        state = state or self.init_state(x.shape[0])
        u, su = lif_method(self.encoder_lif)(self.encoder_norm(self.encoder(x)), {"v": state["u.v"]})
        m, sm = memory_method(u, {"m": state["m"]})
        ms, sms = lif_method(self.memory_lif)(self.memory_norm(m.flatten(-2)), {"v": state["ms.v"]})
        h, sh = lif_method(self.hidden_lif)(self.hidden_norm(self.hidden(torch.cat([ms, x], -1))),
                                            {"v": state["h.v"]})
        return h, {"u.v": su["v"], "m": sm["m"], "ms.v": sms["v"], "h.v": sh["v"]}

    def forward(self, x, state=None):  # x: (B, T, C) -> spikes (B, T, H)
        return self._run(x, state, lambda lif: lif.forward, self.memory.forward)

    def step(self, x, state):  # x: (B, C) -> spikes (B, H)
        return self._run(x, state, lambda lif: lif.step, self.memory.step)


def spiking_token_mixer(dim, order, theta):
    """x_s = LIF_0.5(BN(x)); BN(W_o · SpikingLMU(x_s))."""
    return Stack(_norm(dim), LIF(dim, threshold=0.5), SpikingLMU(dim, dim, order, theta),
                 _linear(dim, dim), _norm(dim))


def spiking_channel_mixer(dim, ratio=4):
    """W_2 · LIF(BN(W_1 · LIF(BN(x)))): the membrane-shortcut ordering."""
    return Stack(_norm(dim), LIF(dim), _linear(dim, ratio * dim),
                 _norm(ratio * dim), LIF(ratio * dim), _linear(ratio * dim, dim))


class LMUFormer(Stack):
    def __init__(self, in_channels: int, dim: int, head: nn.Module, depth: int = 1, order: int = 64,
                 theta: float = 64.0, embed_layers: int = 4, kernel_size: int = 3, mlp_ratio: int = 4,
                 encoder_activation: str = "identity", mixer_activation: str = "identity"):
        blocks = []
        for _ in range(depth):
            blocks += [Residual(lmu_token_mixer(dim, order, theta, encoder_activation)),
                       Residual(conv_channel_mixer(dim, mlp_ratio, mixer_activation))]
        super().__init__(conv_patch_embedding(in_channels, dim, embed_layers, kernel_size), *blocks,
                         _norm(dim), head)


class SpikingLMUFormer(Stack):
    def __init__(self, in_channels: int, dim: int, head: nn.Module, depth: int = 1, order: int = 64,
                 theta: float = 64.0, embed_layers: int = 4, kernel_size: int = 3, mlp_ratio: int = 4):
        blocks = []
        for _ in range(depth):
            blocks += [Residual(spiking_token_mixer(dim, order, theta)),
                       Residual(spiking_channel_mixer(dim, mlp_ratio))]
        super().__init__(spiking_patch_embedding(in_channels, dim, embed_layers, kernel_size), *blocks,
                         _norm(dim), LIF(dim), head)

    def lif_layers(self):
        return [m for m in self.modules() if isinstance(m, LIF)]
