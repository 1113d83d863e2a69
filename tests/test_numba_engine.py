"""The Numba executor of step programs (edge.engine.numba_engine) against a plain float64 numpy
reading of the spec table in docs/bundle.md, written here independently of the engine."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge.engine.numba_engine import NumbaExecutor, ProgramError, UnsupportedOp
from edge.engine import kernels as K

RNG_SEED = 1234


# ---------------------------------------------------------------- the reference (float64, per stream)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sig(v):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


ACTS = {
    "identity": lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "tanh": np.tanh,
    "sigmoid": _sig,
    "gelu": lambda v: 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))),
}


def _scalar(v, W):
    return np.asarray(W[v] if isinstance(v, str) else v, np.float64)


def ref_step(program, W, R, st):
    """One step of one stream: R registers (x filled in), st state dict; both updated."""
    W = {k: np.asarray(v, np.float64) for k, v in W.items()}
    for op in program["ops"]:
        kind = op["op"]
        if kind == "dense":
            v = W[op["weight"]] @ R[op["in"]]
            if op.get("bias") is not None:
                v = v + W[op["bias"]]
            R[op["out"]] = ACTS[op.get("act", "identity")](v)
        elif kind == "affine":
            R[op["out"]] = R[op["in"]] * W[op["scale"]] + W[op["shift"]]
        elif kind == "act":
            R[op["out"]] = ACTS[op["act"]](R[op["in"]])
        elif kind == "add":
            R[op["out"]] = R[op["a"]] + R[op["b"]]
        elif kind == "concat":
            R[op["out"]] = np.concatenate([R[n] for n in op["ins"]])
        elif kind == "glu":
            v = R[op["in"]]
            n = v.size // 2
            R[op["out"]] = v[:n] * _sig(v[n:])
        elif kind == "l2norm":
            v = R[op["in"]]
            R[op["out"]] = v / max(np.linalg.norm(v), 1e-12)
        elif kind == "lstm":
            h, c = st[op["state_h"]], st[op["state_c"]]
            g = W[op["w_ih"]] @ R[op["in"]] + W[op["w_hh"]] @ h
            if op.get("bias") is not None:
                g = g + W[op["bias"]]
            i, f, gg, o = np.split(g, 4)
            c = _sig(f) * c + _sig(i) * np.tanh(gg)
            h = _sig(o) * np.tanh(c)
            st[op["state_h"]], st[op["state_c"]] = h, c
            R[op["out"]] = h
        elif kind == "gru":
            h = st[op["state_h"]]
            gi = W[op["w_ih"]] @ R[op["in"]] + (W[op["b_ih"]] if op.get("b_ih") else 0.0)
            gh = W[op["w_hh"]] @ h + (W[op["b_hh"]] if op.get("b_hh") else 0.0)
            ir, iz, inn = np.split(gi, 3)
            hr, hz, hn = np.split(gh, 3)
            r, z = _sig(ir + hr), _sig(iz + hz)
            n = np.tanh(inn + r * hn)
            h = (1 - z) * n + z * h
            st[op["state_h"]] = h
            R[op["out"]] = h
        elif kind == "lmu_memory":
            A, b = W[op["a"]], W[op["b"]]
            m = st[op["state_m"]].reshape(-1, A.shape[0])
            m = m @ A.T + np.outer(R[op["in"]], b)
            st[op["state_m"]] = m.reshape(st[op["state_m"]].shape)
            R[op["out"]] = m.ravel()
        elif kind == "recurrent_lmu":
            A, b = W[op["a"]], W[op["b"]]
            d = A.shape[0]
            m = st[op["state_m"]].reshape(-1, d)
            h = st[op["state_h"]]
            x = R[op["in"]]
            u = W[op["encoder"]] @ np.concatenate([x, h, m.ravel()])
            m = m @ A.T + np.outer(u, b)
            v = W[op["weight"]] @ np.concatenate([x, h, m.ravel()])
            if op.get("bias") is not None:
                v = v + W[op["bias"]]
            h = np.tanh(v)
            st[op["state_m"]] = m.reshape(st[op["state_m"]].shape)
            st[op["state_h"]] = h
            R[op["out"]] = h
        elif kind == "s4d":
            u = R[op["in"]][:, None]
            xr, xi = st[op["state_xr"]], st[op["state_xi"]]
            ar, ai, br, bi, cr, ci = (W[op[k]] for k in ("ar", "ai", "br", "bi", "cr", "ci"))
            xr, xi = ar * xr - ai * xi + br * u, ar * xi + ai * xr + bi * u
            st[op["state_xr"]], st[op["state_xi"]] = xr, xi
            y = 2 * (cr * xr - ci * xi).sum(-1) + W[op["d"]] * u[:, 0]
            R[op["out"]] = ACTS["gelu"](y)
        elif kind == "lif":
            v = st[op["state_v"]]
            h = v + (R[op["in"]] - v) / _scalar(op["tau"], W)
            s = (h >= _scalar(op["threshold"], W)).astype(np.float64)
            st[op["state_v"]] = h * (1 - s)
            R[op["out"]] = s
        elif kind == "conv":
            w = W[op["weight"]]
            I, k = w.shape[1], w.shape[2]
            buf = st[op["state_buf"]].reshape(I, k - 1) if k > 1 else np.zeros((I, 0))
            cat = np.concatenate([buf, R[op["in"]][:, None]], 1)
            v = np.einsum("oij,ij->o", w, cat)
            if op.get("bias") is not None:
                v = v + W[op["bias"]]
            if k > 1:
                st[op["state_buf"]] = cat[:, 1:].reshape(st[op["state_buf"]].shape)
            R[op["out"]] = v
        elif kind == "running_mean":  # sum [2, n], count [2]: each the sum of its two rows (hi + lo)
            s = st[op["state_sum"]].sum(0) + R[op["in"]]
            c = st[op["state_count"]].sum() + 1
            st[op["state_sum"]] = np.stack([s, np.zeros_like(s)])
            st[op["state_count"]] = np.array([c, 0.0])
            R[op["out"]] = s / c
        else:
            raise AssertionError(kind)


def ref_run(program, W, state_spec, x, state0):
    """x [T, S, C] float; state0 [S, state_size] -> y [T, S, O] float64, final state [S, ss]."""
    T, S, _ = x.shape
    y = np.zeros((T, S, program["registers"][program["output"]]))
    final = np.zeros(state0.shape)
    for s in range(S):
        st, off = {}, 0
        for spec in state_spec:
            n = int(np.prod(spec["shape"], dtype=np.int64))
            st[spec["name"]] = state0[s, off:off + n].astype(np.float64).reshape(spec["shape"])
            off += n
        for t in range(T):
            R = {"x": x[t, s].astype(np.float64)}
            ref_step(program, W, R, st)
            y[t, s] = R[program["output"]]
        final[s] = np.concatenate([np.asarray(st[spec["name"]]).ravel() for spec in state_spec]) \
            if state_spec else final[s]
    return y, final


# ---------------------------------------------------------------- programs built by hand
class P:
    """A tiny program builder: registers, weights and state declared as they are used."""

    def __init__(self, rng, C):
        self.rng = rng
        self.regs = {"x": C}
        self.ops, self.W, self.state = [], {}, []
        self.n = 0

    def reg(self, n):
        self.n += 1
        name = f"r{self.n}"
        self.regs[name] = int(n)
        return name

    def w(self, *shape, scale=None, value=None):
        self.n += 1
        name = f"w{self.n}"
        if value is not None:
            a = np.asarray(value, np.float32).reshape(shape)
        else:
            fan = shape[-1] if len(shape) > 1 else 1
            a = (self.rng.standard_normal(shape) * (scale if scale is not None else 1 / math.sqrt(fan)))
        self.W[name] = a.astype(np.float32)
        return name

    def s(self, *shape, init=0.0, name=None):
        self.n += 1
        name = f"{len(self.state)}.{name or f's{self.n}'}"
        self.state.append({"name": name, "shape": list(shape), "init": init})
        return name

    def op(self, kind, out_len, **fields):
        out = self.reg(out_len)
        self.ops.append({"op": kind, "out": out, **fields})
        return out

    def program(self, out):
        return {"registers": dict(self.regs), "output": out, "ops": list(self.ops)}

    def build(self, out, **kw):
        prog = self.program(out)
        return prog, NumbaExecutor(prog, self.W, self.state, **kw)


def legendre_zoh(d, theta):
    """The zoo's Legendre delay system, ZOH-discretised, as float64 numpy arrays (A [d, d], B [d])."""
    from edge.models.lmu import legendre_delay, zoh
    A, B = zoh(*legendre_delay(d, theta))
    return A.numpy(), B.numpy()


def single(kind, rng, C=5):
    """A one-op (plus glue) program for each op of the spec table."""
    p = P(rng, C)
    x = "x"
    if kind == "dense":
        out = p.op("dense", 7, **{"in": x}, weight=p.w(7, C), bias=p.w(7), act="tanh")
    elif kind == "dense_nobias":
        out = p.op("dense", 3, **{"in": x}, weight=p.w(3, C), bias=None, act="identity")
    elif kind.startswith("dense_"):
        out = p.op("dense", 9, **{"in": x}, weight=p.w(9, C), bias=p.w(9), act=kind[6:])
    elif kind == "affine":
        out = p.op("affine", C, **{"in": x}, scale=p.w(C), shift=p.w(C))
    elif kind.startswith("act_"):
        out = p.op("act", C, **{"in": x}, act=kind[4:])
    elif kind == "add":
        a = p.op("dense", C, **{"in": x}, weight=p.w(C, C), bias=None)
        out = p.op("add", C, a=a, b=x)
    elif kind == "concat":
        a = p.op("act", C, **{"in": x}, act="relu")
        out = p.op("concat", 2 * C + 2, ins=[a, x, p.op("dense", 2, **{"in": x}, weight=p.w(2, C), bias=None)])
    elif kind == "glu":
        a = p.op("dense", 8, **{"in": x}, weight=p.w(8, C), bias=p.w(8))
        out = p.op("glu", 4, **{"in": a})
    elif kind == "l2norm":
        out = p.op("l2norm", C, **{"in": x})
    elif kind == "lstm":
        H = 6
        out = p.op("lstm", H, **{"in": x}, state_h=p.s(H), state_c=p.s(H), w_ih=p.w(4 * H, C),
                   w_hh=p.w(4 * H, H), bias=p.w(4 * H))
    elif kind == "gru":
        H = 6
        out = p.op("gru", H, **{"in": x}, state_h=p.s(H), w_ih=p.w(3 * H, C), w_hh=p.w(3 * H, H),
                   b_ih=p.w(3 * H), b_hh=p.w(3 * H))
    elif kind == "lmu_memory":
        d, ch = 12, 2
        A, B = legendre_zoh(d, 8.0)
        u = p.op("dense", ch, **{"in": x}, weight=p.w(ch, C), bias=None)
        out = p.op("lmu_memory", ch * d, **{"in": u}, state_m=p.s(ch, d), a=p.w(d, d, value=A), b=p.w(d, value=B))
    elif kind == "recurrent_lmu":
        d, ch, H = 8, 2, 5
        A, B = legendre_zoh(d, 6.0)
        F = C + H + ch * d
        out = p.op("recurrent_lmu", H, **{"in": x}, state_m=p.s(ch, d), state_h=p.s(H), a=p.w(d, d, value=A),
                   b=p.w(d, value=B), encoder=p.w(ch, F), weight=p.w(H, F), bias=p.w(H))
    elif kind == "s4d":
        H, N = C, 4
        mag = rng.uniform(0.5, 0.99, (H, N))
        ph = rng.uniform(0, np.pi, (H, N))
        out = p.op("s4d", H, **{"in": x}, state_xr=p.s(H, N), state_xi=p.s(H, N),
                   ar=p.w(H, N, value=mag * np.cos(ph)), ai=p.w(H, N, value=mag * np.sin(ph)),
                   br=p.w(H, N, scale=0.5), bi=p.w(H, N, scale=0.5), cr=p.w(H, N, scale=0.5),
                   ci=p.w(H, N, scale=0.5), d=p.w(H))
    elif kind == "lif":
        out = p.op("lif", C, **{"in": x}, state_v=p.s(C), tau=2.0, threshold=0.5)
    elif kind == "lif_vec":  # per-channel tau and threshold given as initializers
        out = p.op("lif", C, **{"in": x}, state_v=p.s(C), tau=p.w(C, value=rng.uniform(1.5, 4, C)),
                   threshold=p.w(C, value=rng.uniform(0.2, 1, C)))
    elif kind == "conv":
        out = p.op("conv", 4, **{"in": x}, state_buf=p.s(C, 2), weight=p.w(4, C, 3), bias=p.w(4))
    elif kind == "conv_k1":
        out = p.op("conv", 4, **{"in": x}, weight=p.w(4, C, 1), bias=None)
    elif kind == "running_mean":
        out = p.op("running_mean", C, **{"in": x}, state_sum=p.s(2, C), state_count=p.s(2, name="count"))
    else:
        raise AssertionError(kind)
    return p, out


OPS = ["dense", "dense_nobias", "dense_relu", "dense_sigmoid", "dense_gelu", "dense_identity", "affine",
       "act_relu", "act_tanh", "act_sigmoid", "act_gelu", "act_identity", "add", "concat", "glu", "l2norm",
       "lstm", "gru", "lmu_memory", "recurrent_lmu", "s4d", "lif", "lif_vec", "conv", "conv_k1",
       "running_mean"]


def multi(kind, rng, C=6):
    """Programs of several ops, as the exporter writes them."""
    p = P(rng, C)
    if kind == "lmu":  # dense -> lmu_memory -> concat -> dense
        d = 16
        A, B = legendre_zoh(d, 12.0)
        u = p.op("dense", 1, **{"in": "x"}, weight=p.w(1, C), bias=p.w(1))
        m = p.op("lmu_memory", d, **{"in": u}, state_m=p.s(1, d), a=p.w(d, d, value=A), b=p.w(d, value=B))
        cat = p.op("concat", d + C, ins=[m, "x"])
        out = p.op("dense", 10, **{"in": cat}, weight=p.w(10, d + C), bias=p.w(10), act="tanh")
    elif kind == "spiking":  # conv -> affine -> lif -> dense -> lif -> running_mean
        c1 = p.op("conv", 8, **{"in": "x"}, state_buf=p.s(C, 2), weight=p.w(8, C, 3), bias=None)
        a1 = p.op("affine", 8, **{"in": c1}, scale=p.w(8, value=rng.uniform(0.5, 1.5, 8)), shift=p.w(8, scale=0.2))
        s1 = p.op("lif", 8, **{"in": a1}, state_v=p.s(8), tau=2.0, threshold=0.5)
        d1 = p.op("dense", 5, **{"in": s1}, weight=p.w(5, 8), bias=p.w(5))
        s2 = p.op("lif", 5, **{"in": d1}, state_v=p.s(5), tau=2.0, threshold=0.3)
        out = p.op("running_mean", 5, **{"in": s2}, state_sum=p.s(2, 5), state_count=p.s(2, name="count"))
    elif kind == "s4d":  # s4d -> dense -> glu, with a residual add and an l2norm head
        H, N = C, 8
        mag = rng.uniform(0.6, 0.99, (H, N))
        ph = rng.uniform(0, np.pi, (H, N))
        y = p.op("s4d", H, **{"in": "x"}, state_xr=p.s(H, N), state_xi=p.s(H, N),
                 ar=p.w(H, N, value=mag * np.cos(ph)), ai=p.w(H, N, value=mag * np.sin(ph)),
                 br=p.w(H, N, scale=0.3), bi=p.w(H, N, scale=0.3), cr=p.w(H, N, scale=0.3),
                 ci=p.w(H, N, scale=0.3), d=p.w(H))
        z = p.op("dense", 2 * H, **{"in": y}, weight=p.w(2 * H, H), bias=p.w(2 * H))
        g = p.op("glu", H, **{"in": z})
        r = p.op("add", H, a=g, b="x")
        out = p.op("l2norm", H, **{"in": r})
    elif kind == "recurrent":  # lstm -> gru -> dense sigmoid
        h1 = p.op("lstm", 7, **{"in": "x"}, state_h=p.s(7), state_c=p.s(7), w_ih=p.w(28, C),
                  w_hh=p.w(28, 7), bias=p.w(28))
        h2 = p.op("gru", 5, **{"in": h1}, state_h=p.s(5), w_ih=p.w(15, 7), w_hh=p.w(15, 5),
                  b_ih=None, b_hh=p.w(15))
        out = p.op("dense", 3, **{"in": h2}, weight=p.w(3, 5), bias=p.w(3), act="sigmoid")
    elif kind == "aliased":  # ops whose output register is also their input
        r = p.reg(C)
        p.ops.append({"op": "dense", "in": "x", "out": r, "weight": p.w(C, C), "bias": None})
        p.ops.append({"op": "dense", "in": r, "out": r, "weight": p.w(C, C), "bias": p.w(C), "act": "tanh"})
        p.ops.append({"op": "act", "in": r, "out": r, "act": "gelu"})
        p.ops.append({"op": "add", "a": r, "b": r, "out": r})
        out = r
    else:
        raise AssertionError(kind)
    return p, out


MULTI = ["lmu", "spiking", "s4d", "recurrent", "aliased"]


def tol_check(y, ref, rel=1e-4, what=""):
    err = np.abs(y.astype(np.float64) - ref).max() if y.size else 0.0
    bound = rel * max(1.0, np.abs(ref).max() if ref.size else 0.0)
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def random_state(ex, S, rng, scale=0.5):
    st = ex.init_state(S)
    st += (rng.standard_normal(st.shape) * scale).astype(np.float32)
    return st


def fix_counts(ex, st):
    """running_mean counts are whole numbers >= 0: set them to small integers."""
    for name, off, shape in ex.state_layout:
        if name.endswith(".count"):
            st[:, off] = np.arange(st.shape[0]) % 3
            st[:, off + 1] = 0.0
    return st


# ---------------------------------------------------------------- tests: every op
@pytest.mark.parametrize("kind", OPS)
def test_op_matches_reference(kind):
    rng = np.random.default_rng(RNG_SEED)
    p, out = single(kind, rng)
    prog, ex = p.build(out)
    T, S = 40, 3
    x = rng.standard_normal((T, S, ex.input_size)).astype(np.float32)
    st = fix_counts(ex, random_state(ex, S, rng, scale=0.3 if "lif" not in kind else 0.0))
    y_ref, st_ref = ref_run(prog, p.W, p.state, x, st)
    st_id = id(st)
    y = ex.block(x, st).copy()
    assert id(st) == st_id
    tol_check(y, y_ref, what=f"{kind} y")
    tol_check(st, st_ref, what=f"{kind} state")


@pytest.mark.parametrize("kind", OPS + MULTI)
def test_step_loop_equals_block_exactly(kind):
    rng = np.random.default_rng(RNG_SEED + 1)
    p, out = (multi if kind in MULTI else single)(kind, rng)
    prog, ex = p.build(out)
    T, S = 25, 4
    x = rng.standard_normal((T, S, ex.input_size)).astype(np.float32)
    st0 = fix_counts(ex, random_state(ex, S, rng, scale=0.2))
    st_block, st_step = st0.copy(), st0.copy()
    y_block = ex.block(x, st_block).copy()
    y_step = np.stack([ex.step(x[t], st_step).copy() for t in range(T)])
    assert np.array_equal(y_block, y_step)
    assert np.array_equal(st_block, st_step)


@pytest.mark.parametrize("kind", MULTI)
def test_multi_op_programs_match_reference(kind):
    rng = np.random.default_rng(RNG_SEED + 2)
    p, out = multi(kind, rng)
    prog, ex = p.build(out)
    T, S = 60, 2
    x = rng.standard_normal((T, S, ex.input_size)).astype(np.float32)
    st = fix_counts(ex, ex.init_state(S))
    y_ref, st_ref = ref_run(prog, p.W, p.state, x, st)
    y = ex.block(x, st)
    if kind == "spiking":
        assert y_ref.max() > 0, "the test should make neurons fire"
    tol_check(y, y_ref, what=kind)
    tol_check(st, st_ref, what=f"{kind} state")


@pytest.mark.parametrize("kind", ["lmu", "spiking", "s4d", "recurrent", "lstm", "gru", "conv", "l2norm",
                                  "lif_vec", "recurrent_lmu", "running_mean", "glu", "dense_gelu"])
def test_streams_in_one_call_equal_each_stream_alone(kind):
    """Bit-identical: a batch runs as chunks of 256, 128, ..., 16 streams side by side and then
    single streams; every stream's outputs and state equal those of the stream run alone."""
    rng = np.random.default_rng(RNG_SEED + 3)
    p, out = (multi if kind in MULTI else single)(kind, rng)
    prog, ex = p.build(out)
    assert ex.lanes == K.MAX_LANES
    widths = [K.MAX_LANES >> k for k in range(8) if K.MAX_LANES >> k >= K.MIN_LANES]
    T, S = 6, sum(widths) + 3
    x = rng.standard_normal((T, S, ex.input_size)).astype(np.float32)
    st = fix_counts(ex, random_state(ex, S, rng, scale=0.2))
    st_steps = st.copy()
    alone_y, alone_st = [], []
    for s in range(S):
        one = st[s:s + 1].copy()
        alone_y.append(ex.block(np.ascontiguousarray(x[:, s:s + 1]), one)[:, 0].copy())
        alone_st.append(one[0])
    y = ex.block(x, st)
    assert np.array_equal(y, np.stack(alone_y, 1))
    assert np.array_equal(st, np.stack(alone_st))
    for t in range(T):  # and one call per sample for the whole batch
        assert np.array_equal(ex.step(x[t], st_steps), y[t])
    assert np.array_equal(st_steps, st)


def test_concat_inputs_are_placed_in_place():
    """[m; x] of an LMU costs no copy: m and x live inside the concat's rows."""
    rng = np.random.default_rng(RNG_SEED + 5)
    p, out = multi("lmu", rng)
    _, ex = p.build(out)
    ops = ex._prog[ex._prog[K.H_OPS]:].reshape(-1, K.REC)
    assert K.OP_COPY in ops[:, 0]  # lmu_memory copies its result into the state ...
    assert sum(ops[:, 0] == K.OP_COPY) == 1  # ... and that is the only copy


def test_state_is_updated_in_place_and_layout():
    rng = np.random.default_rng(RNG_SEED + 4)
    p, out = multi("recurrent", rng)
    _, ex = p.build(out)
    assert ex.name == "numba"
    assert ex.input_size == 6 and ex.output_size == 3
    assert ex.state_size == 7 + 7 + 5
    assert [(n, o, tuple(s)) for n, o, s in ex.state_layout] == [
        (p.state[0]["name"], 0, (7,)), (p.state[1]["name"], 7, (7,)), (p.state[2]["name"], 14, (5,))]
    st = ex.init_state(3)
    assert st.dtype == np.float32 and st.shape == (3, 19) and st.flags.c_contiguous
    before = st.copy()
    buf = st.__array_interface__["data"][0]
    ex.step(rng.standard_normal((3, 6)).astype(np.float32), st)
    assert st.__array_interface__["data"][0] == buf
    assert not np.array_equal(st, before)


def test_init_state_uses_each_init():
    rng = np.random.default_rng(0)
    p = P(rng, 2)
    out = p.op("lif", 2, **{"in": "x"}, state_v=p.s(2, init=0.25), tau=2.0, threshold=1.0)
    p.state.append({"name": "unused", "shape": [2, 3], "init": -1.5})
    _, ex = p.build(out)
    st = ex.init_state(4)
    assert st.shape == (4, 8)
    assert np.all(st[:, :2] == 0.25) and np.all(st[:, 2:] == -1.5)
    y = ex.step(np.zeros((4, 2), np.float32), st)
    assert np.all(y == 0) and np.all(st[:, 2:] == -1.5)  # an unused state entry is carried unchanged


# ---------------------------------------------------------------- spikes
def test_lif_spikes_identical_to_float32_arithmetic():
    """affine -> lif: the membrane update is exactly the float32 torch/ONNX arithmetic, so the
    spikes (and potentials) are identical bit for bit, including inputs right at threshold."""
    rng = np.random.default_rng(7)
    C, T, S = 16, 300, 5
    p = P(rng, C)
    scale = rng.uniform(0.5, 2.0, C).astype(np.float32)
    shift = rng.uniform(-0.3, 0.3, C).astype(np.float32)
    a = p.op("affine", C, **{"in": "x"}, scale=p.w(C, value=scale), shift=p.w(C, value=shift))
    tau = np.float32(3.0)  # not a power of two: the division must be a true division
    out = p.op("lif", C, **{"in": a}, state_v=p.s(C), tau=float(tau), threshold=0.7)
    _, ex = p.build(out)
    x = rng.uniform(-0.5, 1.5, (T, S, C)).astype(np.float32)
    x[::7] = ((np.float32(0.7) - shift) / scale).astype(np.float32)  # land on (or next to) threshold
    st = ex.init_state(S)
    y = ex.block(x, st)
    v = np.zeros((S, C), np.float32)
    spikes = np.zeros((T, S, C), np.float32)
    thr = np.float32(0.7)
    for t in range(T):
        xin = x[t] * scale + shift
        h = v + (xin - v) / tau
        s = (h - thr >= 0)
        v = np.where(s, np.float32(0), h).astype(np.float32)
        spikes[t] = s
    assert spikes.sum() > 100 and spikes.mean() < 0.9
    assert np.array_equal(y, spikes)
    assert np.array_equal(st, v)


def test_ops_feeding_a_lif_use_exact_transcendentals():
    rng = np.random.default_rng(8)
    p = P(rng, 4)
    g = p.op("dense", 4, **{"in": "x"}, weight=p.w(4, 4), bias=None, act="gelu")      # 0: feeds lif
    s = p.op("lif", 4, **{"in": g}, state_v=p.s(4), tau=2.0, threshold=0.2)           # 1
    t = p.op("dense", 4, **{"in": "x"}, weight=p.w(4, 4), bias=None, act="tanh")      # 2: does not
    out = p.op("add", 4, a=s, b=t)                                                    # 3
    _, ex = p.build(out)
    assert ex.exact_ops == [0]
    _, ex2 = p.build(out, fast_math=False)
    assert ex2.exact_ops == [0, 1, 2, 3]
    x = rng.standard_normal((50, 3, 4)).astype(np.float32)
    y1 = ex.block(x, ex.init_state(3)).copy()
    y2 = ex2.block(x, ex2.init_state(3)).copy()
    tol_check(y1, y2.astype(np.float64), rel=2e-6)


# ---------------------------------------------------------------- approximations
def test_approximation_bounds():
    """The vectorised tanh / sigmoid / gelu stay within the bounds stated in edge.engine.kernels."""
    from numba import njit

    @njit(cache=False)
    def apply(v, code):
        out = v.copy()
        K.act_inplace(out, 0, out.size, code)
        return out

    v = np.concatenate([np.linspace(-12, 12, 400001), np.linspace(-1e-3, 1e-3, 2001),
                        [0.0, -0.0, 1e-30, -1e-30, 50.0, -50.0, 1e6, -1e6]]).astype(np.float32)
    x = v.astype(np.float64)
    err_t = np.abs(apply(v, K.ACT_TANH) - np.tanh(x)).max()
    err_s = np.abs(apply(v, K.ACT_SIGMOID) - _sig(x)).max()
    err_g = (np.abs(apply(v, K.ACT_GELU) - ACTS["gelu"](x)) / np.maximum(1, np.abs(x))).max()
    assert err_t <= 5e-7, err_t
    assert err_s <= 3e-7, err_s
    assert err_g <= 5e-7, err_g
    tiny = np.float32([1e-8, -1e-8])  # tanh keeps its sign and slope near zero
    assert np.allclose(apply(tiny, K.ACT_TANH), tiny, rtol=1e-6)
    nan = apply(np.float32([np.nan]), K.ACT_TANH)
    assert np.isnan(nan[0])


def test_fast_math_off_agrees_with_fast_math_on():
    rng = np.random.default_rng(9)
    for kind in ("recurrent", "s4d", "lmu"):
        p, out = multi(kind, rng)
        _, fast = p.build(out)
        _, exact = p.build(out, fast_math=False)
        x = rng.standard_normal((200, 2, fast.input_size)).astype(np.float32)
        y1 = fast.block(x, fast.init_state(2)).copy()
        y2 = exact.block(x, exact.init_state(2)).copy()
        tol_check(y1, y2.astype(np.float64), rel=1e-5, what=kind)


# ---------------------------------------------------------------- errors and edges
def test_unknown_op_raises_unsupported_op():
    prog = {"registers": {"x": 2, "y": 2}, "output": "y",
            "ops": [{"op": "act", "in": "x", "out": "y", "act": "relu"},
                    {"op": "mamba_scan", "in": "x", "out": "y"}]}
    with pytest.raises(UnsupportedOp, match="mamba_scan"):
        NumbaExecutor(prog, {}, [])
    assert issubclass(UnsupportedOp, ValueError)
    prog["ops"] = [{"op": "act", "in": "x", "out": "y", "act": "swish"}]
    with pytest.raises(UnsupportedOp, match="swish"):
        NumbaExecutor(prog, {}, [])


@pytest.mark.parametrize("mutate, match", [
    (lambda pr, w, s: pr["ops"][0].update(weight="nope"), "nope"),
    (lambda pr, w, s: w.update({pr["ops"][0]["weight"]: np.zeros((2, 2), np.float32)}), "shape"),
    (lambda pr, w, s: pr["ops"][1].update(state_m="missing"), "missing"),
    (lambda pr, w, s: s.__setitem__(0, {"name": s[0]["name"], "shape": [1, 5], "init": 0}), "state"),
    (lambda pr, w, s: pr["ops"][2].update(ins=["x", "ghost"]), "ghost"),
    (lambda pr, w, s: pr.update(output="zzz"), "zzz"),
    (lambda pr, w, s: pr["ops"].reverse(), "before any op writes it"),
    (lambda pr, w, s: pr["ops"][1].update(a=pr["ops"][0]["weight"]), "expected"),
])
def test_inconsistent_programs_are_refused(mutate, match):
    rng = np.random.default_rng(10)
    p, out = multi("lmu", rng)
    prog = p.program(out)
    W, spec = dict(p.W), [dict(s) for s in p.state]
    mutate(prog, W, spec)
    with pytest.raises(ProgramError, match=match):
        NumbaExecutor(prog, W, spec)


def test_bad_call_arguments():
    rng = np.random.default_rng(11)
    p, out = multi("lmu", rng)
    _, ex = p.build(out)
    st = ex.init_state(2)
    with pytest.raises(ValueError, match="x has shape"):
        ex.step(np.zeros((2, 5), np.float32), st)
    with pytest.raises(ValueError, match="x has shape"):
        ex.step(np.zeros((3, 6), np.float32), st)
    with pytest.raises(ValueError):
        ex.block(np.zeros((4, 2, 5), np.float32), st)
    with pytest.raises(TypeError, match="state"):
        ex.step(np.zeros((2, 6), np.float32), st.astype(np.float64))
    with pytest.raises(TypeError, match="state"):
        ex.step(np.zeros((2, 6), np.float32), np.asfortranarray(np.zeros((2, ex.state_size), np.float32)))
    with pytest.raises(ValueError, match="state has shape"):
        ex.step(np.zeros((2, 6), np.float32), np.zeros((2, ex.state_size + 1), np.float32))
    # float64 / lists / non-contiguous x are converted
    st_a, st_b = ex.init_state(2), ex.init_state(2)
    xs = rng.standard_normal((2, 6))
    y1 = ex.step(xs, st_a).copy()
    y2 = ex.step(np.asfortranarray(xs.astype(np.float32)), st_b).copy()
    assert np.array_equal(y1, y2) and np.array_equal(st_a, st_b)
    y3 = ex.step(xs.tolist(), st_a)
    assert y3.shape == (2, 10)
    ro = np.zeros((3, 2, 6), np.float32)
    ro.flags.writeable = False  # a read-only block (np.frombuffer, a memory map) is copied, not refused
    assert ex.block(ro, st_a).shape == (3, 2, 10)
    ro2 = np.zeros((2, 6), np.float32)
    ro2.flags.writeable = False
    assert ex.step(ro2, st_a).shape == (2, 10)
    with pytest.raises(ValueError, match="out has shape"):
        ex.step(np.zeros((2, 6), np.float32), st_a, out=np.empty((3, 10), np.float32))
    with pytest.raises(TypeError, match="out"):
        ex.block(np.zeros((3, 2, 6), np.float32), st_a, out=np.empty((3, 2, 10), np.float64))
    with pytest.raises(ValueError, match="x must be"):
        ex.step(np.zeros(6, np.float32), st_a)


def test_outputs_are_reused_per_shape_and_out_argument():
    rng = np.random.default_rng(12)
    p, out = multi("lmu", rng)
    _, ex = p.build(out)
    st = ex.init_state(2)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    y1 = ex.step(x, st)
    y2 = ex.step(x, st)
    assert y1 is y2  # documented: the executor owns the returned array
    mine = np.empty((2, 10), np.float32)
    assert ex.step(x, st, out=mine) is mine
    xb = rng.standard_normal((5, 2, 6)).astype(np.float32)
    assert ex.block(xb, st) is ex.block(xb, st)
    mine3 = np.empty((5, 2, 10), np.float32)
    assert ex.block(xb, st, out=mine3) is mine3


def test_zero_streams_and_zero_steps():
    rng = np.random.default_rng(13)
    p, out = multi("lmu", rng)
    _, ex = p.build(out)
    assert ex.step(np.zeros((0, 6), np.float32), ex.init_state(0)).shape == (0, 10)
    st = ex.init_state(3)
    assert ex.block(np.zeros((0, 3, 6), np.float32), st).shape == (0, 3, 10)
    assert np.all(st == 0)


def test_engine_package_import_is_light():
    import subprocess
    import sys
    code = ("import sys, edge.engine; "
            "assert 'numba' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys; from edge.engine import NumbaExecutor; import edge.engine.kernels; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- against float32 torch, 10,000 steps
def _torch():
    return pytest.importorskip("torch")


def _long_x(rng, T, S, C):
    # a slowly varying signal plus noise, as a sensor stream
    t = np.arange(T)[:, None, None]
    return (np.sin(t * rng.uniform(0.001, 0.05, (1, S, C)) + rng.uniform(0, 6, (1, S, C)))
            + 0.3 * rng.standard_normal((T, S, C))).astype(np.float32)


def test_lstm_gru_within_tolerance_of_torch_over_10000_steps():
    torch = _torch()
    torch.manual_seed(0)
    rng = np.random.default_rng(14)
    C, H, T, S = 6, 32, 10_000, 2
    lstm, gru = torch.nn.LSTMCell(C, H), torch.nn.GRUCell(H, H)
    W = {"wi": lstm.weight_ih, "wh": lstm.weight_hh, "b": lstm.bias_ih + lstm.bias_hh,
         "gwi": gru.weight_ih, "gwh": gru.weight_hh, "gbi": gru.bias_ih, "gbh": gru.bias_hh}
    W = {k: v.detach().numpy().astype(np.float32) for k, v in W.items()}
    prog = {"registers": {"x": C, "h1": H, "h2": H}, "output": "h2", "ops": [
        {"op": "lstm", "in": "x", "out": "h1", "state_h": "0.h", "state_c": "0.c", "w_ih": "wi", "w_hh": "wh",
         "bias": "b"},
        {"op": "gru", "in": "h1", "out": "h2", "state_h": "1.h", "w_ih": "gwi", "w_hh": "gwh", "b_ih": "gbi",
         "b_hh": "gbh"}]}
    spec = [{"name": "0.h", "shape": [H], "init": 0.0}, {"name": "0.c", "shape": [H], "init": 0.0},
            {"name": "1.h", "shape": [H], "init": 0.0}]
    ex = NumbaExecutor(prog, W, spec)
    x = _long_x(rng, T, S, C)
    y = ex.block(x, ex.init_state(S)).copy()
    with torch.no_grad():
        h1 = c1 = h2 = torch.zeros(S, H)
        ys = []
        for t in range(T):
            h1, c1 = lstm(torch.from_numpy(x[t]), (h1, c1))
            h2 = gru(h1, h2)
            ys.append(h2)
        yt = torch.stack(ys).numpy().astype(np.float64)
    tol_check(y, yt, what="lstm+gru vs torch")


def test_lmu_and_s4d_within_tolerance_of_torch_over_10000_steps():
    torch = _torch()
    rng = np.random.default_rng(15)
    C, d, H, T, S = 6, 64, 64, 10_000, 2
    A, B = legendre_zoh(d, 256.0)
    A32, B32 = A.astype(np.float32), B.astype(np.float32)
    enc = (rng.standard_normal((1, C)) / math.sqrt(C)).astype(np.float32)
    Wh = (rng.standard_normal((H, d + C)) / math.sqrt(d + C)).astype(np.float32)
    bh = (rng.standard_normal(H) * 0.1).astype(np.float32)
    N = 16
    mag = rng.uniform(0.8, 0.999, (H, N))
    ph = rng.uniform(0, np.pi, (H, N))
    s4 = {"ar": mag * np.cos(ph), "ai": mag * np.sin(ph), "br": rng.standard_normal((H, N)) * 0.1,
          "bi": rng.standard_normal((H, N)) * 0.1, "cr": rng.standard_normal((H, N)) * 0.3,
          "ci": rng.standard_normal((H, N)) * 0.3, "d": rng.standard_normal(H)}
    s4 = {k: v.astype(np.float32) for k, v in s4.items()}
    W = {"enc": enc, "A": A32, "B": B32, "Wh": Wh, "bh": bh, **s4}
    prog = {"registers": {"x": C, "u": 1, "m": d, "cat": d + C, "h": H, "y": H}, "output": "y", "ops": [
        {"op": "dense", "in": "x", "out": "u", "weight": "enc", "bias": None, "act": "identity"},
        {"op": "lmu_memory", "in": "u", "out": "m", "state_m": "0.m", "a": "A", "b": "B"},
        {"op": "concat", "ins": ["m", "x"], "out": "cat"},
        {"op": "dense", "in": "cat", "out": "h", "weight": "Wh", "bias": "bh", "act": "tanh"},
        {"op": "s4d", "in": "h", "out": "y", "state_xr": "1.xr", "state_xi": "1.xi", "ar": "ar", "ai": "ai",
         "br": "br", "bi": "bi", "cr": "cr", "ci": "ci", "d": "d"}]}
    spec = [{"name": "0.m", "shape": [1, d], "init": 0.0}, {"name": "1.xr", "shape": [H, N], "init": 0.0},
            {"name": "1.xi", "shape": [H, N], "init": 0.0}]
    ex = NumbaExecutor(prog, W, spec)
    x = _long_x(rng, T, S, C)
    y = ex.block(x, ex.init_state(S)).copy()
    tw = {k: torch.from_numpy(v) for k, v in W.items()}
    F = torch.nn.functional
    with torch.no_grad():
        m = torch.zeros(S, 1, d)
        xr = xi = torch.zeros(S, H, N)
        ys = []
        for t in range(T):
            xt = torch.from_numpy(x[t])
            u = xt @ tw["enc"].T
            m = m @ tw["A"].T + u[..., None] * tw["B"]
            h = torch.tanh(torch.cat([m.flatten(1), xt], -1) @ tw["Wh"].T + tw["bh"])
            u_ = h[..., None]
            xr, xi = (tw["ar"] * xr - tw["ai"] * xi + tw["br"] * u_,
                      tw["ar"] * xi + tw["ai"] * xr + tw["bi"] * u_)
            ys.append(F.gelu(2 * (tw["cr"] * xr - tw["ci"] * xi).sum(-1) + tw["d"] * h))
        yt = torch.stack(ys).numpy().astype(np.float64)
    tol_check(y, yt, what="lmu+s4d vs torch")
