"""LSTM and GRU with explicit state.

`forward` runs torch's fused multi-step kernel; `step` applies the same weights one sample at a
time with the gate equations written out, which is also what export lowers.
"""
import torch
from torch import nn


class LSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rnn = nn.LSTM(input_size, hidden_size, batch_first=True)

    def init_state(self, batch: int) -> dict:
        w = self.rnn.weight_hh_l0
        z = torch.zeros(batch, self.hidden_size, dtype=w.dtype, device=w.device)
        return {"h": z, "c": z.clone()}

    def forward(self, x, state=None):  # x: (B, T, C) -> y: (B, T, H)
        state = state or self.init_state(x.shape[0])
        y, (h, c) = self.rnn(x, (state["h"][None], state["c"][None]))
        return y, {"h": h[0], "c": c[0]}

    def step(self, x, state):  # x: (B, C) -> y: (B, H)
        r = self.rnn
        gates = x @ r.weight_ih_l0.T + r.bias_ih_l0 + state["h"] @ r.weight_hh_l0.T + r.bias_hh_l0
        i, f, g, o = gates.chunk(4, dim=-1)  # torch's gate order
        c = torch.sigmoid(f) * state["c"] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, {"h": h, "c": c}


class GRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rnn = nn.GRU(input_size, hidden_size, batch_first=True)

    def init_state(self, batch: int) -> dict:
        w = self.rnn.weight_hh_l0
        return {"h": torch.zeros(batch, self.hidden_size, dtype=w.dtype, device=w.device)}

    def forward(self, x, state=None):  # x: (B, T, C) -> y: (B, T, H)
        state = state or self.init_state(x.shape[0])
        y, h = self.rnn(x, state["h"][None])
        return y, {"h": h[0]}

    def step(self, x, state):  # x: (B, C) -> y: (B, H)
        r, h = self.rnn, state["h"]
        xr, xz, xn = (x @ r.weight_ih_l0.T + r.bias_ih_l0).chunk(3, dim=-1)
        hr, hz, hn = (h @ r.weight_hh_l0.T + r.bias_hh_l0).chunk(3, dim=-1)
        reset, update = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        candidate = torch.tanh(xn + reset * hn)  # the reset gate scales W_hn h + b_hn, as in torch
        h = (1 - update) * candidate + update * h
        return h, {"h": h}
