"""The layers against references written here from the papers, not from the code under test.

- LMU (Voelker et al. 2019): the continuous (A, B) of the Legendre delay written out element by
  element, discretised by `scipy.signal.cont2discrete(..., method="zoh")`; the parallel LMU
  (Chilkuri & Eliasmith 2021) and the recurrent LMU cell as float64 numpy loops of their equations.
- S4D (Gu et al. 2022): the S4D-Lin / S4D-Inv initialisations, the complex-diagonal ZOH and bilinear
  discretisations in complex numpy, and the layer as a complex recurrence.
- LIF (the spikingjelly neuron of the spiking LMUFormer): charge, fire, hard reset as a numpy loop.

Each check is one function; the `mutant` tests put a deliberately wrong formula into the model code
(a sign in A, Euler instead of ZOH, a strict threshold, ...) and show that the check then fails.
"""
import numpy as np
import pytest
import torch
from scipy.signal import cont2discrete
from scipy.special import erf

import edge.models.lmu as lmu_module
import edge.models.s4d as s4d_module
from edge.models import LIF, LMU, S4D, RecurrentLMU, unroll
from edge.models.fused_lif import fused_lif
from edge.models.lmu import LegendreMemory
from edge.models.spiking import SpikeFunction

EPS32 = 2.0 ** -24  # float32 unit roundoff: |fl(a) − a| ≤ EPS32·|a| when rounding to nearest

NUMPY_ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "gelu": lambda z: 0.5 * z * (1.0 + erf(z / np.sqrt(2.0))),  # the exact (erf) GELU
}


def f64(t) -> np.ndarray:
    return t.detach().double().numpy()


def rel_err(a, b) -> float:
    """max |a − b| relative to max(1, max |b|)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def faces(layer, x):
    """(parallel output, streamed output) of a float32 layer on x (B, T, C), as float64 numpy."""
    layer.eval()
    with torch.no_grad():
        y, _ = layer(torch.from_numpy(x).float())
        y_step, _ = unroll(layer, torch.from_numpy(x).float())
    return f64(y), f64(y_step)


# ------------------------------------------------------------------------------------ Legendre memory

def legendre_continuous(order: int, theta: float):
    """Voelker 2019: a_ij = (2i+1)·(−1 if i < j else (−1)^(i−j+1)), b_i = (2i+1)(−1)^i, both over θ."""
    A, B = np.empty((order, order)), np.empty(order)
    for i in range(order):
        B[i] = (2 * i + 1) * (-1.0) ** i
        for j in range(order):
            A[i, j] = (2 * i + 1) * (-1.0 if i < j else (-1.0) ** (i - j + 1))
    return A / theta, B / theta


def legendre_zoh(order: int, theta: float):
    """(Ā, B̄) of the delay system by scipy's zero-order hold over one sample."""
    A, B = legendre_continuous(order, theta)
    A_bar, B_bar, *_ = cont2discrete((A, B[:, None], np.zeros((1, order)), np.zeros((1, 1))), dt=1.0, method="zoh")
    return A_bar, B_bar[:, 0]


def memory_loop(A_bar, B_bar, u):
    """m_t = Ā m_{t−1} + B̄ u_t from m_{−1} = 0 for every channel; u (B, T, channels) -> m (B, T, channels, d)."""
    Bn, T, channels = u.shape
    m, out = np.zeros((Bn, channels, len(B_bar))), []
    for t in range(T):
        m = m @ A_bar.T + u[:, t, :, None] * B_bar
        out.append(m)
    return np.stack(out, 1)


LMU_SYSTEMS = [(1, 4.0), (6, 10.0), (32, 64.0), (64, 2000.0)]  # (order, θ): θ < 4·order is where Euler blows up


def check_lmu_matrices(order, theta):
    """The model's Ā, B̄ are scipy's ZOH rounded once to float32: elementwise within EPS32·|ref|,
    plus 1e-12·max|ref| for the float64 difference of two expm algorithms."""
    memory = LegendreMemory(1, order, theta)
    A_ref, B_ref = legendre_zoh(order, theta)
    for name, got, ref in (("A_bar", f64(memory.A_bar), A_ref), ("B_bar", f64(memory.B_bar), B_ref)):
        bound = EPS32 * np.abs(ref) + 1e-12 * np.abs(ref).max()
        worst = float((np.abs(got - ref) / bound).max())
        assert worst <= 1.0, f"{name} (order {order}, θ {theta}) off the ZOH reference by {worst:.3g}x the rounding bound"


def lmu_reference(lmu: LMU, x):
    """Chilkuri & Eliasmith eqs. 18-20: u = f_u(W_u x + b_u), m = Ā m + B̄ u, y = f(W_h [m; x] + b_h)."""
    A_bar, B_bar = legendre_zoh(lmu.memory.order, lmu.memory.theta)
    u = NUMPY_ACTIVATIONS[lmu.encoder_activation](x @ f64(lmu.encoder.weight).T + f64(lmu.encoder.bias))
    m = memory_loop(A_bar, B_bar, u)
    features = np.concatenate([m.reshape(*m.shape[:2], -1), x], -1)
    return NUMPY_ACTIVATIONS[lmu.activation](features @ f64(lmu.hidden.weight).T + f64(lmu.hidden.bias))


# float32 layers vs the float64 loops: measured ≤ 7e-7 on these configurations (a few float32 roundings
# of O(1) values); 1e-5 leaves a 14x margin and is far below what every mutant below produces (≥ 0.15)
OUTPUT_TOL = 1e-5


def check_lmu_outputs(order, theta, activation="tanh", encoder_activation="identity", channels=2, T=200):
    torch.manual_seed(order)
    lmu = LMU(3, 5, order, theta, memory_channels=channels, activation=activation,
              encoder_activation=encoder_activation)
    x = np.random.default_rng(order).standard_normal((2, T, 3))
    ref = lmu_reference(lmu, x)
    y, y_step = faces(lmu, x)
    assert rel_err(y, ref) <= OUTPUT_TOL, f"LMU forward vs reference: {rel_err(y, ref):.2e}"
    assert rel_err(y_step, ref) <= OUTPUT_TOL, f"LMU step vs reference: {rel_err(y_step, ref):.2e}"


@pytest.mark.parametrize("order,theta", LMU_SYSTEMS)
def test_lmu_matrices_are_scipy_zoh_of_the_paper(order, theta):
    check_lmu_matrices(order, theta)


def test_legendre_continuous_first_rows():
    """The written-out formula itself, against the first rows printed in the notes (θ = 1)."""
    A, B = legendre_continuous(4, 1.0)
    assert A.tolist() == [[-1, -1, -1, -1], [3, -3, -3, -3], [-5, 5, -5, -5], [7, -7, 7, -7]]
    assert B.tolist() == [1, -3, 5, -7]


@pytest.mark.parametrize("order,theta", LMU_SYSTEMS[1:])
@pytest.mark.parametrize("activation,encoder_activation", [("tanh", "identity"), ("relu", "relu"),
                                                           ("gelu", "identity")])
def test_lmu_outputs_match_the_equations(order, theta, activation, encoder_activation):
    check_lmu_outputs(order, theta, activation, encoder_activation)


def recurrent_lmu_reference(cell: RecurrentLMU, x):
    """Voelker 2019 eqs. 4, 6, 7: u_t = e·[x_t; h_{t−1}; m_{t−1}], m_t = Ā m_{t−1} + B̄ u_t,
    h_t = tanh(W [x_t; h_{t−1}; m_t] + b)."""
    A_bar, B_bar = legendre_zoh(cell.memory.order, cell.memory.theta)
    E, W, b = f64(cell.encoder.weight), f64(cell.hidden.weight), f64(cell.hidden.bias)
    Bn, T, _ = x.shape
    h, m, out = np.zeros((Bn, cell.hidden_size)), np.zeros((Bn, cell.memory.channels, cell.memory.order)), []
    for t in range(T):
        u = np.concatenate([x[:, t], h, m.reshape(Bn, -1)], -1) @ E.T
        m = m @ A_bar.T + u[..., None] * B_bar
        h = np.tanh(np.concatenate([x[:, t], h, m.reshape(Bn, -1)], -1) @ W.T + b)
        out.append(h)
    return np.stack(out, 1)


def check_recurrent_lmu(order=8, theta=20.0, T=150):
    torch.manual_seed(1)
    cell = RecurrentLMU(3, 6, order, theta, memory_channels=2)
    with torch.no_grad():  # larger feedback weights than the default init, so h and m matter
        cell.encoder.weight.mul_(3.0)
    x = np.random.default_rng(1).standard_normal((2, T, 3))
    ref = recurrent_lmu_reference(cell, x)
    y, y_step = faces(cell, x)
    assert rel_err(y, ref) <= OUTPUT_TOL, f"RecurrentLMU forward vs reference: {rel_err(y, ref):.2e}"
    assert rel_err(y_step, ref) <= OUTPUT_TOL, f"RecurrentLMU step vs reference: {rel_err(y_step, ref):.2e}"


def test_recurrent_lmu_matches_the_equations():
    check_recurrent_lmu()


# ------------------------------------------------------------------------------------------------ S4D

def s4d_continuous(layer: S4D):
    """A = −exp(log A_re) + i·A_im and Δ = exp(log Δ) from the layer's parameters, complex128."""
    A = -np.exp(f64(layer.log_A_real)) + 1j * f64(layer.A_imag)
    return A, np.exp(f64(layer.log_dt))[:, None]


def s4d_discretise(A, dt, method):
    """Gu et al. 2022, B ≡ 1. ZOH: Ā = exp(ΔA), B̄ = (ΔA)⁻¹(exp(ΔA) − 1)ΔB.
    Bilinear: Ā = (1 − ΔA/2)⁻¹(1 + ΔA/2), B̄ = (1 − ΔA/2)⁻¹ΔB."""
    dA = dt * A
    if method == "zoh":
        return np.exp(dA), (np.exp(dA) - 1.0) / dA * dt
    return (1.0 + dA / 2) / (1.0 - dA / 2), dt / (1.0 - dA / 2)


def s4d_reference(layer: S4D, u):
    """x_t = Ā x_{t−1} + B̄ u_t (complex, per channel and mode), y_t = 2·Re(Σ_n C_n x_t,n) + D u_t,
    then GELU, the 1×1 projection to 2H and a GLU (first half × sigmoid(second half))."""
    A_bar, B_bar = s4d_discretise(*s4d_continuous(layer), layer.discretization)
    C = f64(layer.C)[..., 0] + 1j * f64(layer.C)[..., 1]
    x, ys = np.zeros((u.shape[0], *A_bar.shape), complex), []
    for t in range(u.shape[1]):
        x = A_bar * x + B_bar * u[:, t, :, None]
        ys.append(2 * (C * x).sum(-1).real + f64(layer.D) * u[:, t])
    z = NUMPY_ACTIVATIONS["gelu"](np.stack(ys, 1)) @ f64(layer.output.weight).T + f64(layer.output.bias)
    a, g = np.split(z, 2, axis=-1)
    return a / (1.0 + np.exp(-g))


def s4d_layer(discretization, init="lin", H=3, N=16, seed=0):
    """An S4D whose A and Δ are moved off their initial values, so every mode differs."""
    torch.manual_seed(seed)
    layer = S4D(H, N, init=init, dt_min=0.01, dt_max=0.5, discretization=discretization)
    with torch.no_grad():
        layer.log_A_real.add_(0.5 * torch.randn_like(layer.log_A_real))
        layer.A_imag.mul_(1 + 0.1 * torch.randn_like(layer.A_imag))
    return layer


def check_s4d_init(init, N=64, H=4, dt_min=1e-3, dt_max=1e-1):
    """S4D-Lin: A_n = −½ + iπn; S4D-Inv: A_n = −½ + i(N/π)(N/(2n+1) − 1); log Δ ~ U[log Δmin, log Δmax]."""
    layer = S4D(H, N, init=init, dt_min=dt_min, dt_max=dt_max)
    A, dt = s4d_continuous(layer)
    n = np.arange(N // 2)
    imag = np.pi * n if init == "lin" else (N / np.pi) * (N / (2 * n + 1) - 1)
    # Im A is one float32 rounding of the formula; Re A = −exp(log ½) goes through log and exp in float32
    assert np.allclose(A.real, -0.5, rtol=2 * EPS32, atol=0), "Re A is not −1/2"
    assert np.allclose(A.imag, np.broadcast_to(imag, A.shape), rtol=EPS32, atol=0), f"Im A is not S4D-{init}"
    assert np.all((dt >= dt_min * (1 - 4 * EPS32)) & (dt <= dt_max * (1 + 4 * EPS32))), "Δ outside [Δmin, Δmax]"


def check_s4d_discretisation(discretization):
    """The model's (Ā, B̄) are the paper's, each of Re and Im rounded once to float32 (so within
    EPS32·|z| as complex numbers), plus 1e-13 for float64 exp/division differences."""
    layer = s4d_layer(discretization)
    A_ref, B_ref = s4d_discretise(*s4d_continuous(layer), discretization)
    A_bar, B_bar, _ = layer.discrete()
    for name, got, ref in (("A_bar", A_bar.detach().numpy(), A_ref), ("B_bar", B_bar.detach().numpy(), B_ref)):
        worst = float((np.abs(got - ref) / (EPS32 * np.abs(ref) + 1e-13)).max())
        assert worst <= 1.0, f"S4D {discretization} {name} off the paper's formula by {worst:.3g}x the rounding bound"


def check_s4d_outputs(discretization, init="lin", T=300):
    layer = s4d_layer(discretization, init)
    u = np.random.default_rng(2).standard_normal((2, T, layer.channels))
    ref = s4d_reference(layer, u)
    y, y_step = faces(layer, u)
    assert rel_err(y, ref) <= OUTPUT_TOL, f"S4D {discretization} forward (kernel) vs recurrence: {rel_err(y, ref):.2e}"
    assert rel_err(y_step, ref) <= OUTPUT_TOL, f"S4D {discretization} step vs recurrence: {rel_err(y_step, ref):.2e}"


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_initialisation_is_the_papers(init):
    check_s4d_init(init)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_s4d_discretisation_is_the_papers(discretization):
    check_s4d_discretisation(discretization)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_s4d_outputs_match_a_complex_recurrence(discretization, init):
    check_s4d_outputs(discretization, init)


# ------------------------------------------------------------------------------------------------ LIF

def lif_reference(x, tau, threshold):
    """H_t = V_{t−1} + (X_t − V_{t−1})/τ;  S_t = 1 if H_t − V_th ≥ 0 else 0;  V_t = H_t (1 − S_t)."""
    v, spikes, potentials = np.zeros(x.shape[::2]), [], []
    for t in range(x.shape[1]):
        h = v + (x[:, t] - v) / tau
        s = (h - threshold >= 0).astype(float)
        v = h * (1 - s)
        spikes.append(s)
        potentials.append(v)
    return np.stack(spikes, 1), np.stack(potentials, 1)


def lif_input(tau, threshold, T=400, C=5):
    """Random currents that fire often, and exact ties: X = τ·V_th from V = 0 gives H = V_th exactly
    (correctly rounded division of an exactly representable quotient), at t = 0 and right after
    that spike's reset."""
    x = 1.2 * threshold * tau * np.random.default_rng(3).standard_normal((2, T, C)) + 0.6 * threshold
    x[:, 0:2, 0] = tau * threshold
    return x


def check_lif(tau, threshold):
    x = lif_input(tau, threshold)
    s_ref, v_ref = lif_reference(x, tau, threshold)
    assert 0.05 < s_ref.mean() < 0.6 and np.all(s_ref[:, 0:2, 0] == 1), "the input must make the neuron fire"
    lif = LIF(x.shape[-1], tau=tau, threshold=threshold).double()
    xt = torch.from_numpy(x)
    state, spikes, potentials = lif.init_state(2), [], []
    with torch.no_grad():
        for t in range(x.shape[1]):
            s, state = lif.step(xt[:, t], state)
            spikes.append(s.numpy())
            potentials.append(state["v"].numpy())
        s_forward, v_last = lif(xt)
        v_last = v_last["v"]
    with fused_lif(lif), torch.no_grad():  # the training path: TorchScript loop
        s_fused, v_fused = lif(xt)
    spikes, potentials = np.stack(spikes, 1), np.stack(potentials, 1)
    assert np.array_equal(spikes, s_ref), f"step spikes differ at {np.argwhere(spikes != s_ref)[:3].tolist()}"
    assert np.abs(potentials - v_ref).max() <= 1e-12, "step membrane potentials differ"
    assert np.array_equal(s_forward.numpy(), s_ref), "forward spikes differ from the reference"
    assert np.array_equal(s_fused.numpy(), s_ref), "fused (training) spikes differ from the reference"
    for v in (v_last, v_fused["v"]):
        assert np.abs(v.numpy() - v_ref[:, -1]).max() <= 1e-12, "final membrane potential differs"


@pytest.mark.parametrize("tau,threshold", [(2.0, 1.0), (2.0, 0.5), (3.0, 0.5)])  # LMUFormer: τ 2, V_th 1 and 0.5
def test_lif_matches_the_neuron_equations(tau, threshold):
    check_lif(tau, threshold)


# -------------------------------------------------------------------------------------------- mutants
# Each mutant puts one wrong formula into the model code; the check that guards it must then fail.

def _wrong_sign_A(order, theta):
    A, B = legendre_continuous(order, theta)
    upper = np.triu(np.ones_like(A, dtype=bool), 1)
    A[upper] *= -1  # +1 instead of −1 above the diagonal
    return torch.from_numpy(A), torch.from_numpy(B)


def _unsigned_B(order, theta):
    A, B = legendre_continuous(order, theta)
    return torch.from_numpy(A), torch.from_numpy(np.abs(B))


def _euler(A, B, dt=1.0):
    return torch.eye(A.shape[0], dtype=A.dtype) + A * dt, B * dt


def _step_untransposed(self, u, state):  # m @ Ā instead of Ā m
    m = state["m"] @ self.A_bar + u[..., None] * self.B_bar
    return m, {"m": m}


def _recurrent_lmu_reads_old_memory(self, x, state):  # h_t from m_{t−1} instead of m_t
    h, m = state["h"], state["m"]
    u = self.encoder(torch.cat([x, h, m.flatten(1)], -1))
    m_new, _ = self.memory.step(u, {"m": m})
    h = torch.tanh(self.hidden(torch.cat([x, h, m.flatten(1)], -1)))
    return h, {"m": m_new, "h": h}


def _s4d_euler_B(A, dt):  # the Mamba simplification: B̄ = Δ
    return torch.exp(A * dt), dt * torch.ones_like(A)


def _s4d_zoh_times_A(A, dt):  # (Ā − 1)·A instead of (Ā − 1)/A
    A_bar = torch.exp(A * dt)
    return A_bar, (A_bar - 1) * A


def _s4d_bilinear_plain_B(A, dt):  # B̄ = Δ, the (1 − ΔA/2)⁻¹ forgotten
    half = A * dt / 2
    return (1 + half) / (1 - half), dt * torch.ones_like(A)


def _s4d_conjugated_step(original):
    def real_split(self):
        k = original(self)
        return {**k, "ai": -k["ai"]}  # rotates the wrong way in the real/imaginary pair
    return real_split


def _lif_soft_reset(self, x, state):
    h = state["v"] + (x - state["v"]) / self.tau
    s = (h >= self.threshold).to(x.dtype)
    return s, {"v": h - s * self.threshold}


def _lif_no_input_decay(self, x, state):
    h = state["v"] * (1 - 1 / self.tau) + x
    s = (h >= self.threshold).to(x.dtype)
    return s, {"v": h * (1 - s)}


def _strict_threshold(ctx, x, alpha):
    ctx.save_for_backward(x)
    ctx.alpha = alpha
    return (x > 0).to(x.dtype)


MUTANTS = {
    # name: (how to install it with monkeypatch, the check that must fail)
    "LMU A: wrong sign above the diagonal": (
        lambda mp: mp.setattr(lmu_module, "legendre_delay", _wrong_sign_A), lambda: check_lmu_matrices(6, 10.0)),
    "LMU B: no alternating sign": (
        lambda mp: mp.setattr(lmu_module, "legendre_delay", _unsigned_B), lambda: check_lmu_matrices(6, 10.0)),
    "LMU: Euler instead of ZOH (matrices)": (
        lambda mp: mp.setattr(lmu_module, "zoh", _euler), lambda: check_lmu_matrices(64, 2000.0)),
    "LMU: Euler instead of ZOH (outputs)": (
        lambda mp: mp.setattr(lmu_module, "zoh", _euler), lambda: check_lmu_outputs(32, 64.0)),
    "LMU: wrong sign in A (outputs)": (
        lambda mp: mp.setattr(lmu_module, "legendre_delay", _wrong_sign_A), lambda: check_lmu_outputs(6, 10.0)),
    "LMU step: m Ā instead of Ā m": (
        lambda mp: mp.setattr(LegendreMemory, "step", _step_untransposed), lambda: check_lmu_outputs(6, 10.0)),
    "LMU: encoder activation ignored": (
        lambda mp: mp.setattr(LMU, "__init__", _lmu_without_encoder_activation(LMU.__init__)),
        lambda: check_lmu_outputs(6, 10.0, "relu", "relu")),
    "RecurrentLMU: Euler instead of ZOH": (
        lambda mp: mp.setattr(lmu_module, "zoh", _euler), lambda: check_recurrent_lmu()),
    "RecurrentLMU: hidden reads m_{t-1}": (
        lambda mp: mp.setattr(RecurrentLMU, "step", _recurrent_lmu_reads_old_memory), lambda: check_recurrent_lmu()),
    "S4D-Lin: n instead of πn": (
        lambda mp: mp.setattr(s4d_module, "init_imag", lambda init, N: torch.arange(N // 2, dtype=torch.float32)),
        lambda: check_s4d_init("lin")),
    "S4D-Inv: the −1 dropped": (
        lambda mp: mp.setattr(s4d_module, "init_imag",
                              lambda init, N: (N / np.pi) * (N / (2 * torch.arange(N // 2, dtype=torch.float32) + 1))),
        lambda: check_s4d_init("inv")),
    "S4D ZOH: Euler B̄ = Δ (matrices)": (
        lambda mp: mp.setitem(s4d_module.DISCRETIZATIONS, "zoh", _s4d_euler_B), lambda: check_s4d_discretisation("zoh")),
    "S4D ZOH: Euler B̄ = Δ (outputs)": (
        lambda mp: mp.setitem(s4d_module.DISCRETIZATIONS, "zoh", _s4d_euler_B), lambda: check_s4d_outputs("zoh")),
    "S4D ZOH: (Ā − 1)·A": (
        lambda mp: mp.setitem(s4d_module.DISCRETIZATIONS, "zoh", _s4d_zoh_times_A),
        lambda: check_s4d_discretisation("zoh")),
    "S4D bilinear: B̄ = Δ": (
        lambda mp: mp.setitem(s4d_module.DISCRETIZATIONS, "bilinear", _s4d_bilinear_plain_B),
        lambda: check_s4d_outputs("bilinear")),
    "S4D step: conjugate rotation": (
        lambda mp: mp.setattr(S4D, "_real_split", _s4d_conjugated_step(S4D._real_split)),
        lambda: check_s4d_outputs("zoh")),
    "LIF: soft reset": (lambda mp: mp.setattr(LIF, "step", _lif_soft_reset), lambda: check_lif(2.0, 1.0)),
    "LIF: no input decay": (lambda mp: mp.setattr(LIF, "step", _lif_no_input_decay), lambda: check_lif(2.0, 1.0)),
    "LIF: fires on H > V_th, not ≥": (
        lambda mp: mp.setattr(SpikeFunction, "forward", staticmethod(_strict_threshold)), lambda: check_lif(2.0, 1.0)),
}


def _lmu_without_encoder_activation(original):
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.encoder_act = NUMPY_ACTIVATIONS["identity"]  # the option stored but not applied
    return init


@pytest.mark.parametrize("name", list(MUTANTS))
def test_the_check_fails_on_a_mutant(name, monkeypatch):
    install, check = MUTANTS[name]
    install(monkeypatch)
    with pytest.raises(AssertionError):
        check()
