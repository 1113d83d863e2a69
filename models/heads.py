"""Task heads, applied per sample so that every step emits an output."""
import torch
import torch.nn.functional as F
from torch import nn


class QuaternionHead(nn.Module):
    """Linear map to 4 values normalised to a unit quaternion (w, x, y, z)."""

    def __init__(self, in_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, 4)

    def init_state(self, batch: int) -> dict:
        return {}

    def forward(self, x, state=None):
        return F.normalize(self.linear(x), dim=-1, eps=1e-12), {}

    step = forward


class ForecastHead(nn.Module):
    """The next `horizon` values of `channels` series from the current features: (..., horizon·channels),
    horizon-major (y[..., h·channels + c] is step t+1+h of series c)."""

    def __init__(self, in_features: int, horizon: int, channels: int):
        super().__init__()
        self.horizon, self.channels = horizon, channels
        self.linear = nn.Linear(in_features, horizon * channels)

    def init_state(self, batch: int) -> dict:
        return {}

    def forward(self, x, state=None):
        return self.linear(x), {}

    step = forward


class ClassifierHead(nn.Module):
    """Per-step class logits; with `running_mean`, the mean of the logits over every step seen so far
    (the cumulative decision LMUFormer uses for early exit), its running sum and count as state; with
    `probabilities`, a softmax over those (what a deployed classifier publishes). Training on
    probabilities would need their log: train with `probabilities=False` and switch it on to export."""

    def __init__(self, in_features: int, classes: int, running_mean: bool = False, probabilities: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, classes)
        self.classes, self.running_mean, self.probabilities = classes, running_mean, probabilities

    def init_state(self, batch: int) -> dict:
        if not self.running_mean:
            return {}
        w = self.linear.weight
        return {"sum": w.new_zeros(batch, self.classes), "count": w.new_zeros(batch, 1)}

    def _out(self, logits):
        return logits.softmax(-1) if self.probabilities else logits

    def forward(self, x, state=None):  # x: (B, T, F) -> (B, T, classes)
        logits = self.linear(x)
        if not self.running_mean:
            return self._out(logits), {}
        state = state or self.init_state(x.shape[0])
        total = state["sum"][:, None] + logits.cumsum(1)
        count = state["count"][:, None] + torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)[:, None]
        return self._out(total / count), {"sum": total[:, -1], "count": count[:, -1]}

    def step(self, x, state):  # x: (B, F) -> (B, classes)
        logits = self.linear(x)
        if not self.running_mean:
            return self._out(logits), {}
        total, count = state["sum"] + logits, state["count"] + 1
        return self._out(total / count), {"sum": total, "count": count}
