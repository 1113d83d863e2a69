"""S4D: a diagonal state-space layer (Gu, Gupta, Goel, Ré 2022), after the minimal `s4d.py`.

Per channel h and complex mode n:  x' = Ā x + B̄ u,  y = 2·Re(Σ_n C_n x'_n) + D u,
with Ā = exp(Δ A), B̄ = (Ā − 1)/A (zero-order hold, B ≡ 1; `discretization="bilinear"` gives
Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2) instead), then GELU and a 1×1 projection to 2H
followed by a GLU. Training convolves with the kernel K_l = 2·Re(Σ_n C_n B̄_n Ā_n^l) via FFT; the
streaming step keeps each complex mode as a (real, imaginary) pair so that ONNX and the Numba
kernels stay real-valued.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from edge.models.lmu import causal_fft_conv

SSM_OPTIM = {"weight_decay": 0.0, "lr_scale": 0.1}  # SSM dynamics: no decay, 10x lower learning rate


def _exact_powers(A, l):
    """A^l for real exponents l: |A|^l·e^(i·l·arg A) from real exp/cos/sin (complex pow is ~20x slower)."""
    magnitude, phase = torch.exp(torch.log(A.abs())[..., None] * l), A.angle()[..., None] * l
    return torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))


def vandermonde(A, L: int, block: int = 128):
    """[A^0, A^1, ..., A^(L-1)] along a new last axis, complex128. Transcendentals only for the first
    `block` powers and for multiples of `block`; the rest is one complex product each, A^(kb)·A^j,
    both factors exact to rounding."""
    b = min(block, L)
    k = -(-L // b)
    dt = torch.float64
    inner = _exact_powers(A, torch.arange(b, dtype=dt, device=A.device))                # (..., b)
    outer = _exact_powers(A, b * torch.arange(k, dtype=dt, device=A.device))            # (..., k)
    return (outer[..., :, None] * inner[..., None, :]).flatten(-2)[..., :L]


def init_imag(init: str, state_size: int):
    """Im A_n, n = 0..N/2−1: S4D-Lin πn; S4D-Inv (N/π)(N/(2n+1) − 1) (float32, as the parameter)."""
    n = torch.arange(state_size // 2, dtype=torch.float64)  # float64, rounded once: N/(2n+1) − 1 cancels
    imag = math.pi * n if init == "lin" else (state_size / math.pi) * (state_size / (2 * n + 1) - 1)
    return imag.float()


def zoh(A, dt):
    """Zero-order hold of x' = A x + u (B ≡ 1): Ā = exp(ΔA), B̄ = (ΔA)⁻¹(exp(ΔA) − 1)Δ = (Ā − 1)/A."""
    A_bar = torch.exp(A * dt)
    return A_bar, (A_bar - 1) / A


def bilinear(A, dt):
    """Bilinear (Tustin): Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2)."""
    half = A * dt / 2
    return (1 + half) / (1 - half), dt / (1 - half)


DISCRETIZATIONS = {"zoh": zoh, "bilinear": bilinear}


class S4D(nn.Module):
    def __init__(self, channels: int, state_size: int = 64, init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, discretization: str = "zoh"):
        super().__init__()
        if init not in ("lin", "inv"):
            raise ValueError(f"S4D init must be 'lin' or 'inv', got {init!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"S4D discretization must be one of {sorted(DISCRETIZATIONS)}, got {discretization!r}")
        H, N = channels, state_size // 2
        self.channels, self.modes, self.init, self.discretization = H, N, init, discretization
        imag = init_imag(init, state_size)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)                                   # (H,)
        self.log_A_real = nn.Parameter(torch.full((H, N), math.log(0.5)))    # Re A = −exp(.)
        self.A_imag = nn.Parameter(imag.repeat(H, 1))                        # (H, N)
        self.C = nn.Parameter(torch.randn(H, N, 2) * math.sqrt(0.5))         # complex as (re, im)
        self.D = nn.Parameter(torch.randn(H))
        self.output = nn.Linear(H, 2 * H)
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._optim = SSM_OPTIM

    def discrete(self):
        """Ā, B̄·C as complex128, with Ā rounded through float32 exactly as the step stores it."""
        # float64 from the parameters on: exp in float32 would put an extra rounding into Δ and Re A
        A = torch.complex(-torch.exp(self.log_A_real.double()), self.A_imag.double())
        dt = torch.exp(self.log_dt.double())[:, None]
        A_bar, B_bar = DISCRETIZATIONS[self.discretization](A, dt)
        A_bar = torch.complex(A_bar.real.float().double(), A_bar.imag.float().double())
        B_bar = torch.complex(B_bar.real.float().double(), B_bar.imag.float().double())
        C = torch.view_as_complex(self.C.double().contiguous())
        return A_bar, B_bar, C

    def step_constants(self):
        """Real-split step parameters, each (H, N) float32: Ā, B̄ and C as (re, im).

        Cached while gradients are off (streaming inference), keyed on the parameters' versions."""
        params = (self.log_dt, self.log_A_real, self.A_imag, self.C)
        key = (*(p._version for p in params), self.C.dtype, self.C.device)
        if torch.is_grad_enabled() or getattr(self, "_step_key", None) != key:
            self._step_cache, self._step_key = self._real_split(), key
        return self._step_cache

    def _real_split(self):
        A_bar, B_bar, C = self.discrete()
        parts = {"ar": A_bar.real, "ai": A_bar.imag, "br": B_bar.real, "bi": B_bar.imag,
                 "cr": C.real, "ci": C.imag}
        return {k: v.float() for k, v in parts.items()}

    def init_state(self, batch: int) -> dict:
        z = self.D.new_zeros(batch, self.channels, self.modes)
        return {"xr": z, "xi": z.clone()}

    def _readout(self, y, u):  # y: SSM output, u: input; both (..., H)
        y = F.gelu(y + self.D * u)
        return F.glu(self.output(y), dim=-1)

    def forward(self, u, state=None):  # u: (B, T, H) -> y: (B, T, H)
        T = u.shape[1]
        A_bar, B_bar, C = self.discrete()
        powers = vandermonde(A_bar, T + 1)  # (H, N, T+1): Ā^l
        K = 2 * torch.einsum("hn,hnl->hl", C * B_bar, powers[..., :T]).real  # (H, T)
        y = causal_fft_conv(u.transpose(1, 2), K.to(u.dtype)).transpose(1, 2)  # (B, T, H)
        # final state: x_T = Ā^T x_0 + Σ_j Ā^(T-1-j) B̄ u_j
        x_last = torch.einsum("bth,hnt->bhn", u.to(powers.dtype), powers[..., :T].flip(-1)) * B_bar
        if state:
            x0 = torch.complex(state["xr"].double(), state["xi"].double())  # (B, H, N)
            y = y + 2 * torch.einsum("bhn,hnt->bth", C * x0, powers[..., 1:]).real.to(u.dtype)
            x_last = x_last + powers[..., T] * x0
        return self._readout(y, u), {"xr": x_last.real.to(u.dtype), "xi": x_last.imag.to(u.dtype)}

    def step(self, u, state):  # u: (B, H) -> y: (B, H)
        k = self.step_constants()
        xr, xi = state["xr"], state["xi"]
        u_ = u[..., None]
        xr, xi = k["ar"] * xr - k["ai"] * xi + k["br"] * u_, k["ar"] * xi + k["ai"] * xr + k["bi"] * u_
        y = 2 * (k["cr"] * xr - k["ci"] * xi).sum(-1)
        return self._readout(y, u), {"xr": xr, "xi": xi}
