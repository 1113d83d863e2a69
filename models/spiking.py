"""Leaky integrate-and-fire neurons with a hard reset (the spikingjelly LIF that LMUFormer uses).

    H_t = V_{t-1} + (X_t − V_{t-1}) / τ       charge (decay_input, reset potential 0)
    S_t = Θ(H_t − V_th)                      fire: Heaviside, Θ(0) = 1
    V_t = H_t · (1 − S_t)                    hard reset, the spike detached from the reset

Training differentiates Θ through a sigmoid surrogate α·σ(αx)(1 − σ(αx)); inference is the exact
Heaviside, so the membrane potentials V are the whole state.
"""
import torch
from torch import nn

from edge.models.stack import unroll


class SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha: float):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * s * (1 - s), None


class LIF(nn.Module):
    def __init__(self, channels: int, tau: float = 2.0, threshold: float = 1.0, alpha: float = 4.0):
        super().__init__()
        self.channels, self.tau, self.threshold, self.alpha = channels, float(tau), float(threshold), alpha
        self.register_buffer("_like", torch.zeros(0), persistent=False)  # follows .double() / .to(device)

    def init_state(self, batch: int) -> dict:
        return {"v": self._like.new_zeros(batch, self.channels)}

    def step(self, x, state):  # x: (B, C) -> spikes: (B, C)
        h = state["v"] + (x - state["v"]) / self.tau
        s = SpikeFunction.apply(h - self.threshold, self.alpha)
        return s, {"v": h * (1 - s.detach())}

    def forward(self, x, state=None):  # x: (B, T, C) -> spikes: (B, T, C); sequential over T
        return unroll(self, x, state)
