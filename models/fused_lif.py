"""A faster training path for LIF layers: the loop over time in TorchScript with a hand-written
surrogate-gradient backward, instead of Python `step` calls recorded op by op by autograd.

The forward values are those of `LIF.step` bit for bit (the same float32 operations in the same
order); the backward is the gradient autograd takes through the unrolled steps (to rounding):

    h_t = v_{t-1} + (x_t − v_{t-1})/τ,   s_t = Θ(h_t − θ),   v_t = h_t (1 − s_t)   (s detached in the reset)
    ∂L/∂h_t = ∂L/∂s_t · σ'_α(h_t − θ) + ∂L/∂v_t · (1 − s_t)
    ∂L/∂x_t = ∂L/∂h_t / τ,   ∂L/∂v_{t−1} = ∂L/∂h_t · (1 − 1/τ)

with σ'_α(u) = α σ(αu)(1 − σ(αu)), the surrogate of `SpikeFunction`. Used only while training:
`fused_lif(model)` swaps it in for every LIF's `forward` and restores the originals on exit, so
export and the streaming face never see it.
"""
from contextlib import contextmanager

import torch

from edge.models.spiking import LIF


@torch.jit.script
def _lif_forward(x, v, tau: float, threshold: float):  # x (B, T, C), v (B, C)
    hs, ss = [], []
    for t in range(x.shape[1]):
        h = v + (x[:, t] - v) / tau
        s = (h - threshold >= 0).to(x.dtype)
        v = h * (1 - s)
        hs.append(h)
        ss.append(s)
    return torch.stack(hs, 1), torch.stack(ss, 1), v


@torch.jit.script
def _lif_backward(g_s, g_v, h, s, tau: float, threshold: float, alpha: float):
    sig = torch.sigmoid(alpha * (h - threshold))
    surrogate = alpha * sig * (1 - sig)
    g_x = torch.empty_like(h)
    for t in range(h.shape[1] - 1, -1, -1):
        g_h = g_s[:, t] * surrogate[:, t] + g_v * (1 - s[:, t])
        g_x[:, t] = g_h / tau
        g_v = g_h * (1 - 1 / tau)
    return g_x, g_v


class LIFSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v, tau: float, threshold: float, alpha: float):
        h, s, v = _lif_forward(x, v, tau, threshold)
        ctx.save_for_backward(h, s)
        ctx.constants = (tau, threshold, alpha)
        return s, v

    @staticmethod
    def backward(ctx, g_s, g_v):
        h, s = ctx.saved_tensors
        g_v = torch.zeros_like(h[:, 0]) if g_v is None else g_v
        g_x, g_v0 = _lif_backward(g_s.contiguous(), g_v, h, s, *ctx.constants)
        return g_x, g_v0, None, None, None


def _forward(lif: LIF):
    def forward(x, state=None):  # x: (B, T, C) -> spikes (B, T, C)
        v = (state or lif.init_state(x.shape[0]))["v"]
        s, v = LIFSequence.apply(x, v, lif.tau, lif.threshold, lif.alpha)
        return s, {"v": v}
    return forward


@contextmanager
def fused_lif(model: torch.nn.Module):
    """Within the block, every LIF of `model` runs its parallel face through `LIFSequence`."""
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    for lif in lifs:
        lif.forward = _forward(lif)  # an instance attribute shadows the method; `del` restores it
    try:
        yield model
    finally:
        for lif in lifs:
            del lif.forward
