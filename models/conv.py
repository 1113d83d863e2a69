"""Causal 1-D convolution over time whose streaming step keeps its input history as state."""
import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Module):
    """y_t = b + Σ_{j<k} W[:, :, j] x_{t-k+1+j}: no look-ahead; state: the last k−1 inputs (B, C_in, k−1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, bias=bias)
        self.in_channels, self.kernel_size = in_channels, kernel_size

    def init_state(self, batch: int) -> dict:
        w = self.conv.weight
        return {"buf": w.new_zeros(batch, self.in_channels, self.kernel_size - 1)}

    def forward(self, x, state=None):  # x: (B, T, C_in) -> y: (B, T, C_out)
        state = state or self.init_state(x.shape[0])
        xt = torch.cat([state["buf"], x.transpose(1, 2)], -1)  # (B, C_in, k-1+T)
        y = self.conv(xt).transpose(1, 2)
        return y, {"buf": xt[..., xt.shape[-1] - (self.kernel_size - 1):]}

    def step(self, x, state):  # x: (B, C_in) -> y: (B, C_out)
        window = torch.cat([state["buf"], x[..., None]], -1)  # (B, C_in, k)
        y = torch.einsum("bik,oik->bo", window, self.conv.weight)
        if self.conv.bias is not None:
            y = y + self.conv.bias
        return y, {"buf": window[..., 1:]}
