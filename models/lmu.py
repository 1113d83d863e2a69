"""Legendre Memory Units.

`LegendreMemory` is the linear time-invariant delay system (Voelker et al. 2019)
    m_t = Ā m_{t-1} + B̄ u_t,
the Padé approximant of a window θ, discretised by zero-order hold. Two layers use it:
`LMU`, the parallel form of Chilkuri & Eliasmith (2021) where the memory is driven by the input
only and so is a causal convolution with its impulse response; and `RecurrentLMU`, the original
cell with hidden and memory feedback, trained by backpropagation through time.
"""
import torch
from torch import nn

from edge.models.activations import activation as activation_fn
from edge.models.stack import unroll


def legendre_delay(order: int, theta: float):
    """Continuous (A, B) of the order-d Legendre delay system over window θ, in float64."""
    q = torch.arange(order, dtype=torch.float64)
    rows = (2 * q + 1)[:, None]
    i, j = q[:, None], q[None, :]
    A = torch.where(i < j, -1.0, (-1.0) ** (i - j + 1)) * rows
    B = (-1.0) ** q[:, None] * rows
    return A / theta, B[:, 0] / theta


def zoh(A, B, dt: float = 1.0):
    """Zero-order hold via one exponential of the augmented matrix [[A, B], [0, 0]]."""
    d = A.shape[0]
    aug = torch.zeros(d + 1, d + 1, dtype=A.dtype)
    aug[:d, :d], aug[:d, d] = A * dt, B * dt
    e = torch.linalg.matrix_exp(aug)
    return e[:d, :d], e[:d, d]


def matrix_powers(A, v, T: int):
    """[A^k v for k in 0..T-1] stacked on a new leading axis; v: (..., d). Doubling: log2(T) matmuls."""
    out, P = v[None], A
    while out.shape[0] < T:
        out = torch.cat([out, out @ P.T], 0)  # A^n · A^k v = A^(n+k) v
        P = P @ P
    return out[:T]


def causal_fft_conv(u, k):
    """Causal convolution along the last axis: u (..., T) with kernel k (..., T); zero-padded to 2T."""
    T = u.shape[-1]
    n = 2 * T
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :T]


class LegendreMemory(nn.Module):
    """`channels` independent Legendre memories of `order` coefficients each; state m: (B, channels, order).

    Ā and B̄ are built in float64 and rounded to float32 once; the convolution kernel is computed from
    the rounded Ā (in float64), so the parallel and the recurrent faces describe the same system.
    Ā is never diagonalised: its eigenvectors are ill-conditioned (cond ~1e15 for order ≥ 32).
    """

    def __init__(self, channels: int, order: int, theta: float):
        super().__init__()
        self.channels, self.order, self.theta = channels, order, float(theta)
        A_bar, B_bar = zoh(*legendre_delay(order, theta))
        self.register_buffer("A_bar", A_bar.float())  # (d, d)
        self.register_buffer("B_bar", B_bar.float())  # (d,)
        self._kernels = {}

    def init_state(self, batch: int) -> dict:
        return {"m": self.A_bar.new_zeros(batch, self.channels, self.order)}

    def impulse_response(self, T: int):  # (d, T): column k is Ā^k B̄
        key = (T, self.A_bar.device, self.A_bar._version)
        if key not in self._kernels:
            H = matrix_powers(self.A_bar.double(), self.B_bar.double(), T)
            self._kernels = {key: H.T.contiguous()}  # keep only the latest length
        return self._kernels[key]

    def forward(self, u, state=None):  # u: (B, T, channels) -> m: (B, T, channels, d)
        T = u.shape[1]
        H = self.impulse_response(T).to(u.dtype)
        m = causal_fft_conv(u.transpose(1, 2)[:, :, None, :], H)  # (B, channels, d, T)
        m = m.permute(0, 3, 1, 2)
        if state:  # the carried state decays as Ā^(t+1) m0
            A = self.A_bar.double()
            m0 = state["m"].double() @ A.T
            m = m + matrix_powers(A, m0, T).to(u.dtype).transpose(0, 1)
        return m, {"m": m[:, -1]}

    def step(self, u, state):  # u: (B, channels) -> m: (B, channels, d)
        m = state["m"] @ self.A_bar.T + u[..., None] * self.B_bar
        return m, {"m": m}


class LMU(nn.Module):
    """Parallel LMU (Chilkuri & Eliasmith 2021, eqs. 18-20):
        u = f_u(W_u x + b_u);  m = LegendreMemory(u);  y = f(W_h [m; x] + b_h).

    The memory is LTI in u whatever f_u is (f_u acts per sample), so either trains by FFT
    convolution. The paper's f_u (and LMUFormer's) is ReLU; the default here is the identity, a
    departure measured in docs/models.md: the two learn alike, and the shipped forecasters need
    the memory to hold the signal itself (their readout is fitted in closed form over a linear model).
    """

    def __init__(self, input_size: int, hidden_size: int, order: int, theta: float,
                 memory_channels: int = 1, activation: str = "tanh", encoder_activation: str = "identity"):
        super().__init__()
        self.encoder = nn.Linear(input_size, memory_channels)
        self.encoder_activation = encoder_activation
        self.encoder_act = activation_fn(encoder_activation)
        self.memory = LegendreMemory(memory_channels, order, theta)
        self.hidden = nn.Linear(memory_channels * order + input_size, hidden_size)
        self.activation = activation
        self.act = activation_fn(activation)
        self.hidden_size = hidden_size

    def init_state(self, batch: int) -> dict:
        return self.memory.init_state(batch)

    def forward(self, x, state=None):  # x: (B, T, C) -> y: (B, T, H)
        m, state = self.memory(self.encoder_act(self.encoder(x)), state)
        y = self.act(self.hidden(torch.cat([m.flatten(2), x], -1)))
        return y, state

    def step(self, x, state):  # x: (B, C) -> y: (B, H)
        m, state = self.memory.step(self.encoder_act(self.encoder(x)), state)
        return self.act(self.hidden(torch.cat([m.flatten(1), x], -1))), state


class RecurrentLMU(nn.Module):
    """The original LMU cell (Voelker 2019), hidden and memory fed back into the memory input:
        u_t = e·[x_t; h_{t-1}; m_{t-1}]
        m_t = Ā m_{t-1} + B̄ u_t
        h_t = tanh(W [x_t; h_{t-1}; m_t] + b)
    Inherently sequential, so `forward` is the unrolled step (BPTT)."""

    def __init__(self, input_size: int, hidden_size: int, order: int, theta: float,
                 memory_channels: int = 1):
        super().__init__()
        feedback = input_size + hidden_size + memory_channels * order
        self.encoder = nn.Linear(feedback, memory_channels, bias=False)
        self.memory = LegendreMemory(memory_channels, order, theta)
        self.hidden = nn.Linear(feedback, hidden_size)
        self.hidden_size = hidden_size

    def init_state(self, batch: int) -> dict:
        m = self.memory.init_state(batch)["m"]
        return {"m": m, "h": m.new_zeros(batch, self.hidden_size)}

    def forward(self, x, state=None):  # x: (B, T, C) -> y: (B, T, H)
        return unroll(self, x, state)

    def step(self, x, state):  # x: (B, C) -> y: (B, H)
        h, m = state["h"], state["m"]
        u = self.encoder(torch.cat([x, h, m.flatten(1)], -1))
        m, _ = self.memory.step(u, {"m": m})
        h = torch.tanh(self.hidden(torch.cat([x, h, m.flatten(1)], -1)))
        return h, {"m": m, "h": h}
