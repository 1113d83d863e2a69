"""The two faces of every layer agree: unrolling `step` equals `forward`, and `forward` over
chunks with the state carried equals one `forward` over the whole sequence."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from edge.models import (GRU, LIF, LMU, LSTM, S4D, CausalConv1d, ClassifierHead, ChannelNorm, ForecastHead,
                         LMUFormer, Pointwise, QuaternionHead, RecurrentLMU, SpikingLMU, SpikingLMUFormer, Stack,
                         unroll)

LENGTHS = [1, 7, 300, 1237]  # 1237: a length no layer was built or trained for
TOL = 1e-5


def max_rel_err(a, b):
    assert a.shape == b.shape
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / max(1.0, b.abs().max().item())).item()


def assert_faces_agree(layer, x, tol=TOL):
    layer.eval()
    with torch.no_grad():
        y, state = layer(x)
        y_step, state_step = unroll(layer, x)
        cut = max(1, x.shape[1] // 3)
        y1, s1 = layer(x[:, :cut])
        y2, s2 = layer(x[:, cut:], s1) if cut < x.shape[1] else (y1[:, :0], s1)
    assert y.shape == y_step.shape
    assert max_rel_err(y_step, y) <= tol, f"step vs forward: {max_rel_err(y_step, y):.2e}"
    assert max_rel_err(torch.cat([y1, y2], 1), y) <= tol, "chunked forward vs whole forward"
    assert state.keys() == state_step.keys() == s2.keys()
    for k in state:
        assert max_rel_err(state_step[k], state[k]) <= tol, f"state {k}: step vs forward"
        assert max_rel_err(s2[k], state[k]) <= tol, f"state {k}: chunked vs whole"


@pytest.mark.parametrize("T", LENGTHS)
@given(seed=st.integers(0, 2**16), C=st.integers(1, 8), H=st.integers(1, 24), B=st.integers(1, 3))
def test_recurrent(T, seed, C, H, B):
    torch.manual_seed(seed)
    x = torch.randn(B, T, C)
    assert_faces_agree(LSTM(C, H), x)
    assert_faces_agree(GRU(C, H), x)


@pytest.mark.parametrize("T", LENGTHS)
@given(seed=st.integers(0, 2**16), C=st.integers(1, 8), H=st.integers(1, 24), order=st.integers(1, 64),
       theta=st.floats(4.0, 2000.0), channels=st.integers(1, 3),
       act=st.sampled_from(["tanh", "relu", "identity", "gelu"]))
def test_lmu(T, seed, C, H, order, theta, channels, act):
    torch.manual_seed(seed)
    assert_faces_agree(LMU(C, H, order, theta, memory_channels=channels, activation=act), torch.randn(2, T, C))


@pytest.mark.parametrize("T", [1, 7, 300])
@given(seed=st.integers(0, 2**16), C=st.integers(1, 6), H=st.integers(1, 16), order=st.integers(1, 32),
       theta=st.floats(4.0, 500.0))
def test_recurrent_lmu(T, seed, C, H, order, theta):
    torch.manual_seed(seed)
    assert_faces_agree(RecurrentLMU(C, H, order, theta), torch.randn(2, T, C))


@pytest.mark.parametrize("T", LENGTHS)
@given(seed=st.integers(0, 2**16), H=st.integers(1, 16), N=st.sampled_from([2, 8, 32, 64]),
       init=st.sampled_from(["lin", "inv"]))
def test_s4d(T, seed, H, N, init):
    torch.manual_seed(seed)
    assert_faces_agree(S4D(H, N, init=init), torch.randn(2, T, H))


@pytest.mark.parametrize("T", LENGTHS)
@given(seed=st.integers(0, 2**16), C=st.integers(1, 6), O=st.integers(1, 8), k=st.integers(1, 5))
def test_causal_conv(T, seed, C, O, k):
    torch.manual_seed(seed)
    assert_faces_agree(CausalConv1d(C, O, k), torch.randn(2, T, C))


def test_causal_conv_has_no_look_ahead():
    torch.manual_seed(0)
    conv, x = CausalConv1d(3, 4, 5).eval(), torch.randn(1, 50, 3)
    x2 = x.clone()
    x2[:, 30:] += 1.0  # change the future only
    with torch.no_grad():
        assert torch.equal(conv(x)[0][:, :30], conv(x2)[0][:, :30])


def test_lmu_memory_decodes_the_delayed_input():
    """The Legendre memory holds the window: P_i(1) = 1 for all i reads u(t − θ) (Voelker 2019)."""
    torch.manual_seed(0)
    lmu = LMU(1, 1, order=24, theta=100.0)
    t = torch.arange(3000, dtype=torch.float32)
    u = torch.sin(t / 40.0) + 0.5 * torch.sin(t / 17.0)
    with torch.no_grad():
        m, _ = lmu.memory(u[None, :, None])
    decoded = m[0, :, 0, :].sum(-1)  # Σ_i P_i(1) m_i
    err = (decoded[500:] - u[400:-100]).abs().max().item()
    assert err < 0.05, f"decoded u(t-θ) off by {err:.3f}"


@pytest.mark.parametrize("T", [1, 7, 300, 1237])
@settings(max_examples=6)
@given(seed=st.integers(0, 2**16), depth=st.integers(1, 2), dim=st.sampled_from([8, 16]),
       order=st.integers(2, 32), k=st.integers(1, 4))
def test_lmuformer(T, seed, depth, dim, order, k):
    torch.manual_seed(seed)
    head = ClassifierHead(dim, 5, running_mean=True)
    model = LMUFormer(6, dim, head, depth=depth, order=order, theta=float(2 * order), kernel_size=k)
    randomise_batchnorm(model)
    assert_faces_agree(model, torch.randn(2, T, 6))


@given(seed=st.integers(0, 2**16))
def test_stack_of_every_layer(seed):
    torch.manual_seed(seed)
    model = Stack(CausalConv1d(6, 8, 3), LSTM(8, 8), GRU(8, 8), LMU(8, 12, 16, 40.0), RecurrentLMU(12, 8, 8, 20.0),
                  Pointwise(torch.nn.Linear(8, 10)), S4D(10, 16), ForecastHead(10, 3, 2))
    assert_faces_agree(model, torch.randn(2, 300, 6))
    quat = Stack(GRU(6, 8), QuaternionHead(8))
    assert_faces_agree(quat, torch.randn(2, 50, 6))
    with torch.no_grad():
        q, _ = quat(torch.randn(2, 50, 6))
    assert torch.allclose(q.norm(dim=-1), torch.ones(2, 50), atol=1e-6)


def randomise_batchnorm(model):
    """Eval-mode BatchNorm with non-trivial statistics, so folding and ordering errors show."""
    for m in model.modules():
        if isinstance(m, ChannelNorm):
            n = m.bn.num_features
            m.bn.running_mean.uniform_(-0.5, 0.5)
            m.bn.running_var.uniform_(0.5, 2.0)
            m.bn.weight.data.uniform_(1.5, 3.0)  # a gain above 1 makes the LIF neurons fire
            m.bn.bias.data.uniform_(-0.2, 0.6)


EPS32 = 2.0 ** -24  # float32 unit roundoff


def spike_trains(model, x, face, ties=None):
    """Run one face, recording at every LIF its input current X, its charged potential
    H = V + (X − V)/τ and its spikes, each (B, T, C). Both faces drive each LIF through its `step`
    (the parallel face loops it over T), so wrapping `step` sees every call either way.

    With `ties` ({name: (spikes of the other face, bound)}), a neuron whose H lies within `bound`
    of the threshold takes the other face's spike: rounding cannot decide such a tie, and letting
    it go either way would make the two runs diverge from there on. Returns the output, the
    records {name: {"x", "h", "s"}} and the number of ties so decided."""
    records, decided = {}, [0]
    lifs = {name: m for name, m in model.named_modules() if isinstance(m, LIF)}
    for name, m in lifs.items():
        def step(x_, s_, orig=m.step, name=name, lif=m):
            h = s_["v"] + (x_ - s_["v"]) / lif.tau  # the charge, as the neuron computes it
            y_, s2 = orig(x_, s_)
            rec = records.setdefault(name, {"x": [], "h": [], "s": []})
            if ties is not None:
                other, bound = ties[name]
                tie = (h - lif.threshold).abs() <= bound
                if tie.any():
                    y_ = torch.where(tie, other[:, len(rec["s"])], y_)
                    s2 = {"v": h * (1 - y_)}
                    decided[0] += int(tie.sum())
            for key, value in (("x", x_), ("h", h), ("s", y_)):
                rec[key].append(value.clone())
            return y_, s2
        m.step = step
    try:
        with torch.no_grad():
            y, _ = model(x) if face == "forward" else unroll(model, x)
    finally:
        for m in lifs.values():
            del m.step
    return y, {k: {f: torch.stack(v, 1) for f, v in rec.items()} for k, rec in records.items()}, decided[0]


def potential_bound(model, T):
    """How far the two float32 faces' potentials H can be apart, per unit of input current.

    The faces compute the same real numbers in different orders: an FFT convolution against the
    recurrence m_t = Ā m_{t−1} + B̄ u_t for the memory, conv1d against an einsum, batched against
    single-row matmuls. To first order each float32 operation errs by at most EPS32 times its
    operands' size (taken as the LIF's largest input current: every gain on the way is a BatchNorm
    of 1.5-3 over a sum that the current itself is). A step of the recurrence adds order + 1 such
    errors, and the error made k steps ago is carried by Ā^k, so the memory is off by at most
    (order + 1)·Σ_{k<T} ‖Ā^k‖_∞ (computed below; 106 for order 32 against T = 300); the FFT face's
    error, ~log2(2T)·EPS32 per output (Higham, Accuracy and Stability, §24.1), is smaller. Then at most
    `fan_in` more for the largest dot product after it. The LIF's charge is a convex combination of
    past currents (weights (1/τ)(1 − 1/τ)^k summing below 1): no amplification. Two faces, each that
    far from the exact value: twice the sum. Measured gaps are at most ~1e-3 of this worst case."""
    lmu = next(m for m in model.modules() if isinstance(m, SpikingLMU))
    A, power, carried = lmu.memory.A_bar.double(), torch.eye(lmu.memory.order, dtype=torch.float64), 0.0
    for _ in range(T):
        carried += power.abs().sum(1).max().item()
        power = power @ A
    fan_in = max(m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 2 * ((lmu.memory.order + 1) * carried + fan_in) * EPS32


# (T, seed, dim, order): fixed cases, so every run checks the same ones. At T = 300 the neurons fire at
# 8-14 % and 0.015-0.09 % of the potentials fall within the bound of the threshold (at most 1 %, asserted)
SPIKING_CASES = [(1, 0, 8, 4), (7, 1, 16, 17), (300, 2, 8, 32), (300, 3, 16, 12), (300, 4, 16, 24)]


@pytest.mark.parametrize("T,seed,dim,order", SPIKING_CASES)
def test_spiking_lmuformer_identical_spikes(T, seed, dim, order):
    """In float32 the two faces' potentials agree to `potential_bound` × the largest input current
    of that LIF, and so their spikes are identical wherever the potential is farther than that from
    the threshold; the ties within it, which rounding cannot decide, are decided alike (see
    `spike_trains`). It replaces a hypothesis test in float64 that required identical spikes with no
    tolerance, reported flaky at T = 300 (issue 13): one spike within rounding of the threshold
    flipping is enough for the two runs to diverge from there on."""
    torch.manual_seed(seed)
    model = SpikingLMUFormer(6, dim, ClassifierHead(dim, 4), depth=1, order=order, theta=float(order))
    randomise_batchnorm(model)
    model.eval()
    x = 1.5 * torch.randn(2, T, 6)
    y_f, forward, _ = spike_trains(model, x, "forward")
    per_current = potential_bound(model, T)
    bounds = {name: per_current * max(1.0, r["x"].abs().max().item()) for name, r in forward.items()}
    y_s, step, decided = spike_trains(model, x, "step", {k: (r["s"], bounds[k]) for k, r in forward.items()})
    assert forward.keys() == step.keys() and len(forward) == len(model.lif_layers())
    for name in forward:
        gap = (forward[name]["h"] - step[name]["h"]).abs().max().item()
        assert gap <= bounds[name], f"{name}: potentials {gap:.2e} apart, bound {bounds[name]:.2e}"
        assert torch.equal(forward[name]["s"], step[name]["s"]), f"spike trains differ at {name}"
    total = sum(r["s"].numel() for r in forward.values())
    assert decided <= max(2, 1e-2 * total), f"{decided} of {total} potentials within the bound: it is too loose"
    assert max_rel_err(y_s, y_f) <= 1e-5
    if T >= 300:
        rate = torch.cat([r["s"].flatten() for r in forward.values()]).mean().item()
        assert 0.02 <= rate <= 0.5, f"spike rate {rate:.3f}: the test must see neurons firing"


def test_spiking_lmuformer_float32_faces_agree():
    torch.manual_seed(3)
    model = SpikingLMUFormer(6, 16, ClassifierHead(16, 4, running_mean=True), depth=2, order=16, theta=16.0)
    randomise_batchnorm(model)
    assert_faces_agree(model, 1.5 * torch.randn(2, 300, 6), tol=1e-5)


def test_lif_matches_the_reference_neuron():
    """spikingjelly's LIF (τ=2, V_th=1, hard reset): inputs [1.5, 1.5, 0.2, 3.0] spike [0, 1, 0, 1]
    with post-reset potentials [0.75, 0, 0.1, 0] (worked by hand from the charge/fire/reset equations)."""
    lif = LIF(1)
    s, state = lif(torch.tensor([1.5, 1.5, 0.2, 3.0]).view(1, 4, 1))
    assert s.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    potentials, v = [], {"v": torch.zeros(1, 1)}
    for x in [1.5, 1.5, 0.2, 3.0]:
        _, v = lif.step(torch.tensor([[x]]), v)
        potentials.append(v["v"].item())
    assert potentials == pytest.approx([0.75, 0.0, 0.1, 0.0])


def test_lif_surrogate_gradient_flows():
    lif = LIF(3)
    x = torch.full((1, 5, 3), 0.9, requires_grad=True)
    s, _ = lif(x)
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
