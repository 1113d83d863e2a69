"""Numba kernels of the step-program interpreter (see docs/bundle.md, "The step program").

Everything here is small and free of I/O. The kernels are ``@njit(cache=True,
error_model="numpy")`` (numpy's error model: a float division is a plain IEEE division, with no
zero check, which would stop LLVM from vectorising any loop that divides). The Python side
(:mod:`edge.engine.numba_engine`) lowers a program to *micro-ops* encoded as int64 records
(int64 throughout: int32 index arithmetic also stops LLVM from vectorising) and lays every
per-stream vector (registers, temporaries, state) out as rows of one float32 workspace ``ws``.
:func:`run` then loops group-of-streams -> t -> micro-op inside one compiled call; a step is
the same call with T = 1.

Workspace layout
----------------
A "row" is one float of one per-stream vector. Two layouts, picked per group of streams:

* per stream (``L = 1``): row r at ``ws[r]``; streams run one after another. Matrix-vector
  products vectorise over the output features (:func:`matvec_1`).
* chunk (``L`` = 16 ... ``prog[H_LANES]``, a power of two): L streams side by side, row r of
  lane l at ``ws[r*L + l]``. Kernels vectorise over the lanes and matrix-vector products are
  weight-stationary (:func:`matvec_c`): each weight is read once per chunk, not per stream.
  State, inputs and outputs are transposed in and out in 16-lane tiles.

Kernels index *views* with the bare loop variable: numba's negative-index wrap-around on a
computed index (``ws[a + k]``) also stops LLVM from vectorising.

Both layouts do the same float operations on every element in the same order (a sequential
FMA chain over the inputs of a matrix-vector product, the same activation code, the same
partial sums), so a stream gives bit-identical results alone or inside a batch of any size,
and step by step or as a block.

Weights live in one flat float32 array ``wts``; matrices are stored transposed (``WT[i, o]``,
input-major) so the per-stream kernels read contiguous rows.

Precision
---------
Accumulation is float32 (float64 for the ``l2norm`` sum of squares). The matrix kernels and the
activation approximations use ``fastmath={'contract', 'nsz'}`` only: FMA contraction and
signed-zero freedom, *no* reassociation (results do not depend on vector width or batch).
Kernels where a sum has two products (``f·c + i·g``, complex products), and ``affine``, ``add``,
``lif``, ``running_mean``, ``l2norm`` have no fastmath flag at all: each operation rounds like the
ONNX/torch element-wise ops (mul, then add; ``h = v + (x - v) / tau`` with a true division).

Transcendentals: numba has no vector libm here (no SVML), so ``math.tanh``/``exp``/``erf`` are
scalar calls (~3-11 ns each). The fast forms below are branch-free rational approximations that
LLVM vectorises (~0.4 ns per element). Max error, float32 evaluation over a dense grid of
[-12, 12] against float64 (``tests/test_numba_engine.py::test_approximation_bounds`` checks
5e-7 / 3e-7 / 5e-7):

* ``tanh_a``: Eigen's [13/6] minimax rational on |x| <= 7.9053, clamped outside: 2.6e-7 absolute
  (relative 2.5e-7 for |x| < 1; tanh keeps its sign and slope near 0).
* ``sigmoid_a(x) = 0.5 + 0.5*tanh_a(x/2)``: 1.6e-7 absolute (not relative: tiny values of
  sigmoid(x) for x << 0 come out as ~1e-8 absolute noise or 0).
* ``gelu_a(x) = 0.5*x*(1 + erf_a(x/sqrt 2))``, Eigen's [13/8] rational erf on |z| <= 4:
  2.6e-7 * max(1, |x|) (float32 libm erf: 4.5e-7 absolute).

For comparison the float32 libm forms (``*_x``) are within 1e-7 (tanh, sigmoid). Over 10,000
steps of an LSTM+GRU or an LMU+S4D stack the engine stays within 1e-4 * max(1, |y|) of float32
torch (tests). The ``*_x`` forms are used for every op whose output can reach a LIF input (so
spike decisions never see an approximation) and everywhere with ``fast_math=False``.

The attitude ops (``attitude_filter``, ``tilt_correct``) are plain float32 scalar code with no
fastmath and the libm sin/cos/atan2 and exact sqrt, written in the order of operations of
models/attitude.py (see the section "attitude" below). Given the same four functions they equal
float32 torch bit for bit; against torch itself (SLEEF/MKL transcendentals, an MKL ``torch.sqrt``
that is not correctly rounded) they stay within ~2e-6 over 10,000 steps of a real recording
(tests/test_numba_attitude.py).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir as _llvm_ir
from numba import njit
from numba.core import types as _nb_types
from numba.extending import intrinsic

from edge.engine.trig32 import atan2_32, cos32, sin32

F32 = np.float32
FM = {"contract", "nsz"}      # see "Precision" above: never 'reassoc'
MAX_LANES = 256              # widest chunk of streams run side by side (see numba_engine)
MIN_LANES = 16               # narrower groups run one stream at a time

# ---- program encoding ---------------------------------------------------------------------
# header (int64 words at the start of the program array; int64 throughout: int32 index
# arithmetic stops LLVM from vectorising the kernels)
H_NOPS, H_ROWS, H_SBASE, H_SSIZE, H_XROW, H_C, H_YROW, H_O, H_OPS, H_WS0, H_LANES = range(11)
HEADER = 16
REC = 16                      # int64 words per micro-op record: opcode + up to 15 fields

OP_COPY = 1      # dst, src, n                                   rows dst[:n] = src[:n]
OP_SCOPY = 2     # dst, src, nblk, blen, dstride, sstride        strided block copy
OP_DENSE = 3     # in, out, I, O, w(WT [I,O]), b (-1: none), act
OP_AFFINE = 4    # in, out, n, scale, shift
OP_ACT = 5       # in, out, n, act
OP_ADD = 6       # a, b, out, n
OP_GLU = 7       # in, out, n, exact
OP_L2NORM = 8    # in, out, n
OP_LMUMEM = 9    # u, m, out, ch, d, A (AT [d,d]), B [d]         out = m·Aᵀ + u⊗b (m untouched)
OP_LSTM = 10     # gates [4H], c, h, out, H, exact               gates already hold W[x;h] + b
OP_GRU = 11      # gi [3H], gh [3H], h, out, H, exact            gi = W_ih x + b_ih, gh = W_hh h + b_hh
OP_S4D = 12      # u, xr, xi, out, H, N, par (6 x [H,N]: ar ai br bi cr ci), d, exact, tmp
OP_LIF = 13      # in, v, out, n, tau [n], thr [n]
OP_RMEAN = 14    # in, sum, count, out, n
OP_ATTITUDE = 15  # in [6], out [4], gravity [3], consts [13], q, bias, x1, x2, y1, y2, gyr_lp, acc_lp, rest, started
OP_TILT = 16     # q [4], r [3], out [4]                          out = normalise(q ⊗ exp(r))
OP_SOFTMAX = 17  # in, out, n                                    out = exp(in − max) / Σ exp(in − max)

ACT_IDENTITY, ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_GELU = 0, 1, 2, 3, 4
ACT_TANH_X, ACT_SIGMOID_X, ACT_GELU_X = 5, 6, 7   # exact libm forms
ACT_CODES = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "gelu": 4}
EXACT_OFFSET = 3                                  # ACT_TANH + 3 == ACT_TANH_X, ...

_ZERO = F32(0.0)
_ONE = F32(1.0)
_HALF = F32(0.5)
_TWO = F32(2.0)
_SQRT1_2 = F32(0.7071067811865476)
_EPS12 = F32(1e-12)   # the clamp_min guards of models/attitude.py, as torch rounds them (float32)
_EPS24 = F32(1e-24)

# tanh: Eigen's generic_fast_tanh_float coefficients (odd numerator / even denominator)
_T_CLAMP = F32(7.90531110763549805)
_TA1, _TA3, _TA5 = F32(4.89352455891786e-03), F32(6.37261928875436e-04), F32(1.48572235717979e-05)
_TA7, _TA9 = F32(5.12229709037114e-08), F32(-8.60467152213735e-11)
_TA11, _TA13 = F32(2.00018790482477e-13), F32(-2.76076847742355e-16)
_TB0, _TB2 = F32(4.89352518554385e-03), F32(2.26843463243900e-03)
_TB4, _TB6 = F32(1.18534705686654e-04), F32(1.19825839466702e-06)
# erf: Eigen's generic_fast_erf_float coefficients
_E_CLAMP = F32(4.0)
_EA1, _EA3, _EA5 = F32(-1.60960333262415e-02), F32(-2.95459980854025e-03), F32(-7.34990630326855e-04)
_EA7, _EA9 = F32(-5.69250639462346e-05), F32(-2.10102402082508e-06)
_EA11, _EA13 = F32(2.77068142495902e-08), F32(-2.72614225801306e-10)
_EB0, _EB2 = F32(-1.42647390514189e-02), F32(-7.37332916720468e-03)
_EB4, _EB6 = F32(-1.68282697438203e-03), F32(-2.13374055278905e-04)
_EB8 = F32(-1.45660718464996e-05)


# ---- scalar activations ---------------------------------------------------------------------
@njit(fastmath=FM, cache=True, error_model="numpy")
def tanh_a(v):
    """Rational tanh, vectorisable; |error| <= 5e-7 (float32 evaluation)."""
    x = v
    if x > _T_CLAMP:
        x = _T_CLAMP
    if x < -_T_CLAMP:
        x = -_T_CLAMP
    x2 = x * x
    p = _TA13
    p = p * x2 + _TA11
    p = p * x2 + _TA9
    p = p * x2 + _TA7
    p = p * x2 + _TA5
    p = p * x2 + _TA3
    p = p * x2 + _TA1
    p = p * x
    q = _TB6
    q = q * x2 + _TB4
    q = q * x2 + _TB2
    q = q * x2 + _TB0
    return p / q


@njit(fastmath=FM, cache=True, error_model="numpy")
def erf_a(v):
    """Rational erf, vectorisable; |error| <= 2e-7 (float32 evaluation)."""
    x = v
    if x > _E_CLAMP:
        x = _E_CLAMP
    if x < -_E_CLAMP:
        x = -_E_CLAMP
    x2 = x * x
    p = _EA13
    p = p * x2 + _EA11
    p = p * x2 + _EA9
    p = p * x2 + _EA7
    p = p * x2 + _EA5
    p = p * x2 + _EA3
    p = p * x2 + _EA1
    p = p * x
    q = _EB8
    q = q * x2 + _EB6
    q = q * x2 + _EB4
    q = q * x2 + _EB2
    q = q * x2 + _EB0
    return p / q


@njit(fastmath=FM, cache=True, error_model="numpy")
def sigmoid_a(v):
    return _HALF + _HALF * tanh_a(_HALF * v)


@njit(fastmath=FM, cache=True, error_model="numpy")
def gelu_a(v):
    return _HALF * v * (_ONE + erf_a(v * _SQRT1_2))


@njit(cache=True, error_model="numpy")
def tanh_x(v):
    return math.tanh(v)


@njit(cache=True, error_model="numpy")
def sigmoid_x(v):
    return _ONE / (_ONE + math.exp(-v))


@njit(cache=True, error_model="numpy")
def gelu_x(v):
    return v * _HALF * (_ONE + math.erf(v * _SQRT1_2))


# ---- element-wise micro-ops ------------------------------------------------------------------
# Offsets here are element offsets into ws (row * L). Every kernel takes array *views* and
# indexes them with the bare loop variable: numba's negative-index wrap-around on a computed
# index (ws[a + k]) would stop LLVM from vectorising the loop.
@njit(fastmath=FM, cache=True, error_model="numpy")
def act_inplace(ws, a, n, code):
    """ws[a:a+n] = act(ws[a:a+n]); one loop per code so that each vectorises."""
    V = ws[a:a + n]
    if code == ACT_RELU:
        for k in range(n):
            v = V[k]
            V[k] = _ZERO if v < _ZERO else v
    elif code == ACT_TANH:
        for k in range(n):
            V[k] = tanh_a(V[k])
    elif code == ACT_SIGMOID:
        for k in range(n):
            V[k] = sigmoid_a(V[k])
    elif code == ACT_GELU:
        for k in range(n):
            V[k] = gelu_a(V[k])
    elif code == ACT_TANH_X:
        for k in range(n):
            V[k] = tanh_x(V[k])
    elif code == ACT_SIGMOID_X:
        for k in range(n):
            V[k] = sigmoid_x(V[k])
    elif code == ACT_GELU_X:
        for k in range(n):
            V[k] = gelu_x(V[k])


@njit(cache=True, error_model="numpy")
def copy_rows(ws, dst, src, n):
    D = ws[dst:dst + n]
    S = ws[src:src + n]
    for k in range(n):
        D[k] = S[k]


@njit(cache=True, error_model="numpy")
def scopy_rows(ws, dst, src, nblk, blen, dstride, sstride):
    """nblk blocks of blen floats: block b goes from src + b*sstride to dst + b*dstride.
    Blocks are copied in increasing order (a forward shift within one region is safe)."""
    if blen < 16:  # conv taps: a few floats per block, not worth a view each
        for b in range(nblk):
            d0 = dst + b * dstride
            s0 = src + b * sstride
            for k in range(blen):
                ws[d0 + k] = ws[s0 + k]
        return
    for b in range(nblk):
        d0 = dst + b * dstride
        s0 = src + b * sstride
        D = ws[d0:d0 + blen]
        S = ws[s0:s0 + blen]
        for k in range(blen):
            D[k] = S[k]


@njit(cache=True, error_model="numpy")
def add_rows(ws, a, b, out, n):
    A = ws[a:a + n]
    B = ws[b:b + n]
    D = ws[out:out + n]
    for k in range(n):
        D[k] = A[k] + B[k]


@njit(cache=True, error_model="numpy")
def affine_rows(ws, wts, src, dst, n, L, scale, shift):
    """out = in·scale + shift, rounded after the product and after the sum (no FMA)."""
    X = ws[src * L:(src + n) * L].reshape((n, L))
    Y = ws[dst * L:(dst + n) * L].reshape((n, L))
    for r in range(n):
        sc = wts[scale + r]
        sh = wts[shift + r]
        for l in range(L):
            Y[r, l] = X[r, l] * sc + sh


@njit(cache=True, error_model="numpy")
def lif_rows(ws, wts, src, v, dst, n, L, tau, thr):
    """h = v + (x − v)/τ (a true division); s = h ≥ θ; v = h·(1 − s); out = s. No fastmath:
    every spike decision is made on exactly rounded float32 values."""
    X = ws[src * L:(src + n) * L].reshape((n, L))
    V = ws[v * L:(v + n) * L].reshape((n, L))
    Y = ws[dst * L:(dst + n) * L].reshape((n, L))
    for r in range(n):
        t = wts[tau + r]
        th = wts[thr + r]
        for l in range(L):
            vv = V[r, l]
            h = vv + (X[r, l] - vv) / t
            s = h >= th
            V[r, l] = _ZERO if s else h
            Y[r, l] = _ONE if s else _ZERO


@njit(cache=True, error_model="numpy")
def rmean_rows(ws, src, sm, cnt, dst, n, L):
    """sum += in; count += 1; out = sum / count, exact over any stream a device will see.

    The sum (rows sm: [2, n]) and the count (rows cnt: [2]) are each kept as a float32 pair
    hi + lo, updated in float64: s = (hi + lo) + in, hi = f32(s), lo = f32(s − hi). The pair holds
    48 significant bits, so the count is an exact integer up to 2^48 samples and the sum loses at
    most 2^-48 of itself per sample (a float32 sum stops growing once count or sum pass 2^24
    times their increment). out = f32(sum / count), the division in float64."""
    X = ws[src * L:(src + n) * L].reshape((n, L))
    SH = ws[sm * L:(sm + n) * L].reshape((n, L))
    SL = ws[(sm + n) * L:(sm + 2 * n) * L].reshape((n, L))
    Y = ws[dst * L:(dst + n) * L].reshape((n, L))
    CH = ws[cnt * L:(cnt + 1) * L]
    CL = ws[(cnt + 1) * L:(cnt + 2) * L]
    for l in range(L):
        c = (np.float64(CH[l]) + np.float64(CL[l])) + 1.0
        hi = F32(c)
        CH[l] = hi
        CL[l] = F32(c - np.float64(hi))
        for r in range(n):
            v = (np.float64(SH[r, l]) + np.float64(SL[r, l])) + np.float64(X[r, l])
            vh = F32(v)
            SH[r, l] = vh
            SL[r, l] = F32(v - np.float64(vh))
            Y[r, l] = F32(v / c)


@njit(fastmath=FM, cache=True, error_model="numpy")
def glu_rows(ws, src, dst, m, exact):
    """m = n*L elements: out = in[:m]·σ(in[m:])."""
    A = ws[src:src + m]
    G = ws[src + m:src + 2 * m]
    D = ws[dst:dst + m]
    if exact:
        for k in range(m):
            D[k] = A[k] * sigmoid_x(G[k])
    else:
        for k in range(m):
            D[k] = A[k] * sigmoid_a(G[k])


@njit(cache=True, error_model="numpy")
def l2norm_rows(ws, src, dst, n, L):
    """out = in / max(‖in‖, 1e-12); the sum of squares in float64, sequential over rows."""
    X = ws[src * L:(src + n) * L].reshape((n, L))
    Y = ws[dst * L:(dst + n) * L].reshape((n, L))
    for l in range(L):
        acc = 0.0
        for r in range(n):
            v = np.float64(X[r, l])
            acc += v * v
        den = F32(max(math.sqrt(acc), 1e-12))
        for r in range(n):
            Y[r, l] = X[r, l] / den


@njit(cache=True, error_model="numpy")
def softmax_rows(ws, src, dst, n, L):
    """out = exp(in − max(in)) / Σ exp(in − max(in)) per lane; exp and the sum in float64."""
    X = ws[src * L:(src + n) * L].reshape((n, L))
    Y = ws[dst * L:(dst + n) * L].reshape((n, L))
    for l in range(L):
        top = X[0, l]
        for r in range(1, n):
            top = max(top, X[r, l])
        acc = 0.0
        for r in range(n):
            e = math.exp(np.float64(X[r, l]) - np.float64(top))
            Y[r, l] = e  # in place is safe: X[r, l] is not read again
            acc += e
        for r in range(n):
            Y[r, l] = F32(Y[r, l] / acc)


# LSTM / GRU element-wise parts: no fastmath here (f·c + i·g has two products, and FMA
# contraction could pick either one, differently in vector and scalar code); the activation
# helpers carry their own flags.
@njit(cache=True, error_model="numpy")
def lstm_cell(ws, g, c, out, m, exact):
    """m = H*L elements; gate blocks i, f, g, o of m elements each start at g; c updated in
    place; out = new h (the caller copies it into the h state)."""
    GI = ws[g:g + m]
    GF = ws[g + m:g + 2 * m]
    GG = ws[g + 2 * m:g + 3 * m]
    GO = ws[g + 3 * m:g + 4 * m]
    C = ws[c:c + m]
    Y = ws[out:out + m]
    if exact:
        for k in range(m):
            cn = sigmoid_x(GF[k]) * C[k] + sigmoid_x(GI[k]) * tanh_x(GG[k])
            C[k] = cn
            Y[k] = sigmoid_x(GO[k]) * tanh_x(cn)
    else:
        for k in range(m):
            cn = sigmoid_a(GF[k]) * C[k] + sigmoid_a(GI[k]) * tanh_a(GG[k])
            C[k] = cn
            Y[k] = sigmoid_a(GO[k]) * tanh_a(cn)


@njit(cache=True, error_model="numpy")
def gru_cell(ws, gi, gh, h, out, m, exact):
    """r, z, n blocks of m = H*L elements; n = tanh(gi_n + r·gh_n); out = (1 − z)·n + z·h."""
    IR = ws[gi:gi + m]
    IZ = ws[gi + m:gi + 2 * m]
    IN = ws[gi + 2 * m:gi + 3 * m]
    HR = ws[gh:gh + m]
    HZ = ws[gh + m:gh + 2 * m]
    HN = ws[gh + 2 * m:gh + 3 * m]
    Hs = ws[h:h + m]
    Y = ws[out:out + m]
    if exact:
        for k in range(m):
            r = sigmoid_x(IR[k] + HR[k])
            z = sigmoid_x(IZ[k] + HZ[k])
            nn = tanh_x(IN[k] + r * HN[k])
            Y[k] = (_ONE - z) * nn + z * Hs[k]
    else:
        for k in range(m):
            r = sigmoid_a(IR[k] + HR[k])
            z = sigmoid_a(IZ[k] + HZ[k])
            nn = tanh_a(IN[k] + r * HN[k])
            Y[k] = (_ONE - z) * nn + z * Hs[k]


# ---- matrix-vector micro-ops ------------------------------------------------------------------
# y = b + Σ_i W[:, i]·x_i as one sequential FMA chain per output element, in both layouts:
# ((b + w0·x0) + w1·x1) + ... is contracted to fma(w1, x1, fma(w0, x0, b)) whether a loop is
# vectorised or not, and no reassociation is allowed, so the per-stream and the chunk kernels
# give bit-identical results.
@njit(fastmath=FM, cache=True, error_model="numpy")
def matvec_1(ws, wts, xin, out, I, O, w, b):
    """Per-stream: out[:O] = b + WT[I, O]ᵀ·x (b < 0: no bias). Vectorised over the outputs."""
    X = ws[xin:xin + I]
    Y = ws[out:out + O]
    WT = wts[w:w + I * O].reshape((I, O))
    if b >= 0:
        B = wts[b:b + O]
        for o in range(O):
            Y[o] = B[o]
    else:
        for o in range(O):
            Y[o] = _ZERO
    i = 0
    while i + 4 <= I:
        a0 = X[i]
        a1 = X[i + 1]
        a2 = X[i + 2]
        a3 = X[i + 3]
        W0 = WT[i]
        W1 = WT[i + 1]
        W2 = WT[i + 2]
        W3 = WT[i + 3]
        for o in range(O):
            Y[o] = Y[o] + W0[o] * a0 + W1[o] * a1 + W2[o] * a2 + W3[o] * a3
        i += 4
    while i < I:
        a0 = X[i]
        W0 = WT[i]
        for o in range(O):
            Y[o] = Y[o] + W0[o] * a0
        i += 1


@njit(fastmath=FM, cache=True, error_model="numpy")
def matvec_c(ws, wts, xin, out, I, O, w, b, L):
    """Chunk: rows are L lanes wide (xin, out are row offsets). Weight-stationary, vectorised
    over the lanes; four outputs share each load of four input rows."""
    X = ws[xin * L:(xin + I) * L].reshape((I, L))
    Y = ws[out * L:(out + O) * L].reshape((O, L))
    WT = wts[w:w + I * O].reshape((I, O))
    o = 0
    while o < O:
        if o + 4 <= O:
            Y0 = Y[o]
            Y1 = Y[o + 1]
            Y2 = Y[o + 2]
            Y3 = Y[o + 3]
            b0 = wts[b + o] if b >= 0 else _ZERO
            b1 = wts[b + o + 1] if b >= 0 else _ZERO
            b2 = wts[b + o + 2] if b >= 0 else _ZERO
            b3 = wts[b + o + 3] if b >= 0 else _ZERO
            for l in range(L):
                Y0[l] = b0
                Y1[l] = b1
                Y2[l] = b2
                Y3[l] = b3
            i = 0
            while i + 4 <= I:
                X0 = X[i]
                X1 = X[i + 1]
                X2 = X[i + 2]
                X3 = X[i + 3]
                p0, p1, p2, p3 = WT[i, o], WT[i + 1, o], WT[i + 2, o], WT[i + 3, o]
                q0, q1, q2, q3 = WT[i, o + 1], WT[i + 1, o + 1], WT[i + 2, o + 1], WT[i + 3, o + 1]
                r0, r1, r2, r3 = WT[i, o + 2], WT[i + 1, o + 2], WT[i + 2, o + 2], WT[i + 3, o + 2]
                s0, s1, s2, s3 = WT[i, o + 3], WT[i + 1, o + 3], WT[i + 2, o + 3], WT[i + 3, o + 3]
                for l in range(L):
                    x0 = X0[l]
                    x1 = X1[l]
                    x2 = X2[l]
                    x3 = X3[l]
                    Y0[l] = Y0[l] + p0 * x0 + p1 * x1 + p2 * x2 + p3 * x3
                    Y1[l] = Y1[l] + q0 * x0 + q1 * x1 + q2 * x2 + q3 * x3
                    Y2[l] = Y2[l] + r0 * x0 + r1 * x1 + r2 * x2 + r3 * x3
                    Y3[l] = Y3[l] + s0 * x0 + s1 * x1 + s2 * x2 + s3 * x3
                i += 4
            while i < I:
                X0 = X[i]
                p0, q0, r0, s0 = WT[i, o], WT[i, o + 1], WT[i, o + 2], WT[i, o + 3]
                for l in range(L):
                    x0 = X0[l]
                    Y0[l] = Y0[l] + p0 * x0
                    Y1[l] = Y1[l] + q0 * x0
                    Y2[l] = Y2[l] + r0 * x0
                    Y3[l] = Y3[l] + s0 * x0
                i += 1
            o += 4
        else:
            Y0 = Y[o]
            b0 = wts[b + o] if b >= 0 else _ZERO
            for l in range(L):
                Y0[l] = b0
            i = 0
            while i + 4 <= I:
                X0 = X[i]
                X1 = X[i + 1]
                X2 = X[i + 2]
                X3 = X[i + 3]
                p0, p1, p2, p3 = WT[i, o], WT[i + 1, o], WT[i + 2, o], WT[i + 3, o]
                for l in range(L):
                    Y0[l] = Y0[l] + p0 * X0[l] + p1 * X1[l] + p2 * X2[l] + p3 * X3[l]
                i += 4
            while i < I:
                X0 = X[i]
                p0 = WT[i, o]
                for l in range(L):
                    Y0[l] = Y0[l] + p0 * X0[l]
                i += 1
            o += 1


@njit(fastmath=FM, cache=True, error_model="numpy")
def outer_add(ws, wts, out, u, d, B, L):
    """Y[i, l] += b[i]·u[l] for the d rows of one LMU channel (the u⊗b term)."""
    Y = ws[out * L:(out + d) * L].reshape((d, L))
    U = ws[u * L:(u + 1) * L]
    for i in range(d):
        bi = wts[B + i]
        Yi = Y[i]
        for l in range(L):
            Yi[l] = Yi[l] + bi * U[l]


@njit(cache=True, error_model="numpy")
def lmumem(ws, wts, u, m, out, ch, d, A, B, L):
    """out[c] = A·m[c] + b·u[c] for each memory channel c (m itself is not written)."""
    for c in range(ch):
        if L == 1:
            matvec_1(ws, wts, m + c * d, out + c * d, d, d, A, -1)
        else:
            matvec_c(ws, wts, m + c * d, out + c * d, d, d, A, -1, L)
        outer_add(ws, wts, out + c * d, u + c, d, B, L)


@njit(cache=True, error_model="numpy")
def s4d_rows(ws, wts, u, xr, xi, out, H, N, par, dd, tmp, L, exact):
    """S4D step on states in their own [H, N] order (plain copies in and out of the workspace).
    The readout Σ_n is four interleaved partial sums (n mod 4, each in increasing n) combined as
    (p0 + p1) + (p2 + p3), the same order per stream (L = 1: the mode update vectorises over n)
    and per lane (chunks: it vectorises over the lanes). No fastmath: the complex products have
    two terms each, rounded like the torch/ONNX element-wise ops."""
    HN = H * N
    AR = wts[par:par + HN].reshape((H, N))
    AI = wts[par + HN:par + 2 * HN].reshape((H, N))
    BR = wts[par + 2 * HN:par + 3 * HN].reshape((H, N))
    BI = wts[par + 3 * HN:par + 4 * HN].reshape((H, N))
    CR = wts[par + 4 * HN:par + 5 * HN].reshape((H, N))
    CI = wts[par + 5 * HN:par + 6 * HN].reshape((H, N))
    D = wts[dd:dd + H]
    U = ws[u * L:(u + H) * L].reshape((H, L))
    Y = ws[out * L:(out + H) * L].reshape((H, L))
    if L == 1:
        XR = ws[xr:xr + HN].reshape((H, N))
        XI = ws[xi:xi + HN].reshape((H, N))
        TT = ws[tmp:tmp + N]
        for h in range(H):
            uu = U[h, 0]
            xr_h, xi_h = XR[h], XI[h]
            ar, ai, br, bi, cr, ci = AR[h], AI[h], BR[h], BI[h], CR[h], CI[h]
            for n in range(N):
                r = xr_h[n]
                im = xi_h[n]
                nr = ar[n] * r - ai[n] * im + br[n] * uu
                ni = ar[n] * im + ai[n] * r + bi[n] * uu
                xr_h[n] = nr
                xi_h[n] = ni
                TT[n] = cr[n] * nr - ci[n] * ni
            p0 = _ZERO
            p1 = _ZERO
            p2 = _ZERO
            p3 = _ZERO
            n = 0
            while n + 4 <= N:
                p0 = p0 + TT[n]
                p1 = p1 + TT[n + 1]
                p2 = p2 + TT[n + 2]
                p3 = p3 + TT[n + 3]
                n += 4
            if n < N:
                p0 = p0 + TT[n]
            if n + 1 < N:
                p1 = p1 + TT[n + 1]
            if n + 2 < N:
                p2 = p2 + TT[n + 2]
            Y[h, 0] = (p0 + p1) + (p2 + p3)
    else:
        XR3 = ws[xr * L:(xr + HN) * L].reshape((H, N, L))
        XI3 = ws[xi * L:(xi + HN) * L].reshape((H, N, L))
        P = ws[tmp * L:(tmp + 4) * L].reshape((4, L))
        for h in range(H):
            Uh = U[h]
            for k in range(4):
                Pk = P[k]
                for l in range(L):
                    Pk[l] = _ZERO
            for n in range(N):
                ar, ai, br, bi, cr, ci = AR[h, n], AI[h, n], BR[h, n], BI[h, n], CR[h, n], CI[h, n]
                Xr = XR3[h, n]
                Xi = XI3[h, n]
                Pk = P[n % 4]
                for l in range(L):
                    uu = Uh[l]
                    r = Xr[l]
                    im = Xi[l]
                    nr = ar * r - ai * im + br * uu
                    ni = ar * im + ai * r + bi * uu
                    Xr[l] = nr
                    Xi[l] = ni
                    Pk[l] = Pk[l] + (cr * nr - ci * ni)
            Yh = Y[h]
            P0, P1, P2, P3 = P[0], P[1], P[2], P[3]
            for l in range(L):
                Yh[l] = (P0[l] + P1[l]) + (P2[l] + P3[l])
    for h in range(H):
        dh = D[h]
        Yh = Y[h]
        Uh = U[h]
        for l in range(L):
            Yh[l] = _TWO * Yh[l] + dh * Uh[l]
    act_inplace(ws, out * L, H * L, ACT_GELU_X if exact else ACT_GELU)


# ---- attitude: the quaternion filter of models/attitude.py, per stream ----------------------
# Plain float32 scalar code, one lane at a time (three libm calls per step do not vectorise),
# written to round exactly like the torch reference: no fastmath (no contraction, no
# reassociation), every sum left to right as torch evaluates the expression, the scalar constants
# rounded to float32 (as torch casts a Python float for a float32 tensor), ``clamp_min`` as
# ``m if v < m else v`` (NaN propagates). Norms follow torch's float32 CPU reduction over a last
# dimension of 3 or 4 (measured on its AVX2 kernels): three elements are an FMA chain
# ``fma(z, z, fma(y, y, x·x))``, four are ``((x·x + y·y) + z·z) + w·w`` with every product rounded.
# sin/cos/atan2 are the libm float32 calls and sqrt is exact (IEEE): torch's float32 sin/cos/atan2
# (SLEEF/MKL) and its MKL ``torch.sqrt`` (not correctly rounded: ~1 argument in 5 is 1 ulp off)
# differ by an ulp now and then; with those four replaced, torch and this code agree bit for bit.
# Quaternions are (w, x, y, z) tuples; quat_mul and quat_rotate are inlined (numba IR) for speed.
@intrinsic
def fma32(typingctx, a, b, c):
    """a·b + c in float32 with one rounding (llvm.fma.f32)."""
    f32 = _nb_types.float32
    if a != f32 or b != f32 or c != f32:
        return None

    def codegen(context, builder, signature, args):
        f = _llvm_ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], _llvm_ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return f32(f32, f32, f32), codegen


@njit(cache=True, error_model="numpy")
def clamp_min(v, m):
    return m if v < m else v


@njit(cache=True, error_model="numpy")
def norm3(a, b, c):
    return math.sqrt(fma32(c, c, fma32(b, b, a * a)))


@njit(cache=True, error_model="numpy")
def norm4(a, b, c, d):
    return math.sqrt(a * a + b * b + c * c + d * d)


@njit(cache=True, error_model="numpy", inline="always")
def quat_mul(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw)


@njit(cache=True, error_model="numpy", inline="always")
def quat_rotate(q, v):
    """R(q)·v, term by term as models/attitude.py writes it."""
    w, x, y, z = q
    v0, v1, v2 = v
    return ((_ONE - _TWO * (y * y + z * z)) * v0 + _TWO * (x * y - w * z) * v1 + _TWO * (x * z + w * y) * v2,
            _TWO * (x * y + w * z) * v0 + (_ONE - _TWO * (x * x + z * z)) * v1 + _TWO * (y * z - w * x) * v2,
            _TWO * (x * z - w * y) * v0 + _TWO * (y * z + w * x) * v1 + (_ONE - _TWO * (x * x + y * y)) * v2)


@njit(cache=True, error_model="numpy")
def quat_conj(q):
    return (q[0], -q[1], -q[2], -q[3])


@njit(cache=True, error_model="numpy")
def quat_exp(r):
    """[cos(|r|/2), sin(|r|/2)·r/max(|r|, 1e-12)]."""
    angle = norm3(r[0], r[1], r[2])
    half = angle / _TWO
    f = math.sin(half) / clamp_min(angle, _EPS12)
    return (math.cos(half), r[0] * f, r[1] * f, r[2] * f)


@njit(cache=True, error_model="numpy")
def quat_exp32(r):
    """[cos(|r|/2), sin(|r|/2)·r/max(|r|, 1e-12)] with the polynomial sin and cos."""
    angle = norm3(r[0], r[1], r[2])
    half = angle / _TWO
    f = sin32(half) / clamp_min(angle, _EPS12)
    return (cos32(half), r[0] * f, r[1] * f, r[2] * f)


@njit(cache=True, error_model="numpy")
def level_to_up(n):
    """[c, n_y/(2c), −n_x/(2c), 0], c = √max((1 + n_z)/2, 1e-12)."""
    c = math.sqrt(clamp_min((_ONE + n[2]) / _TWO, _EPS12))
    c2 = _TWO * c
    return (c, n[1] / c2, -n[0] / c2, _ZERO)


@njit(cache=True, error_model="numpy")
def _unit3(v):
    m = clamp_min(norm3(v[0], v[1], v[2]), _EPS12)
    return (v[0] / m, v[1] / m, v[2] / m)


@njit(cache=True, error_model="numpy")
def _get3(V, l):
    return (V[0, l], V[1, l], V[2, l])


@njit(cache=True, error_model="numpy")
def _put3(V, l, v):
    V[0, l] = v[0]
    V[1, l] = v[1]
    V[2, l] = v[2]


@njit(cache=True, error_model="numpy")
def _lerp3(s, k, v):
    """s + k·(v − s), per component."""
    return (s[0] + k * (v[0] - s[0]), s[1] + k * (v[1] - s[1]), s[2] + k * (v[2] - s[2]))


@njit(cache=True, error_model="numpy")
def attitude_update(acc, gyr, fresh, q, bias, x1, x2, y1, y2, gyr_lp, acc_lp, rest, C, libm_free):
    """models/attitude.py ``attitude_filter_step`` for one stream, on 3-tuples; returns the new
    (q, gravity, bias, x1, x2, y1, y2, gyr_lp, acc_lp, rest). ``fresh``: the first sample levels the filter
    from the accelerometer (the state passed in is ignored). consts C: dt b0 b1 b2 a1 a2 k_rest
    k_bias_rest rest_gyr rest_acc rest_time k_bias, and 3·rest_gyr (rounded from float64, as torch does).
    ``libm_free``: sin, cos and atan2 from trig32 (the integer reference and its C) instead of libm."""
    dt, b0, b1, b2, a1, a2 = C[0], C[1], C[2], C[3], C[4], C[5]
    k_rest, k_bias_rest, rest_gyr, rest_acc, rest_time, k_bias = C[6], C[7], C[8], C[9], C[10], C[11]
    rest_gyr3 = C[12]
    if fresh:
        q = level_to_up(_unit3(acc))  # (torch computes it every step, and keeps it only here)
        a_up = quat_rotate(q, acc)
        x1 = a_up
        x2 = a_up
        y1 = a_up
        y2 = a_up
        acc_lp = acc

    # rest detection; the gyro reads its bias at rest
    gyr_lp = _lerp3(gyr_lp, k_rest, gyr)
    acc_lp = _lerp3(acc_lp, k_rest, acc)
    still = (norm3(gyr_lp[0] - bias[0], gyr_lp[1] - bias[1], gyr_lp[2] - bias[2]) < rest_gyr) \
        & (norm3(acc[0] - acc_lp[0], acc[1] - acc_lp[1], acc[2] - acc_lp[2]) < rest_acc) \
        & (norm3(gyr[0] - gyr_lp[0], gyr[1] - gyr_lp[1], gyr[2] - gyr_lp[2]) < rest_gyr3)
    rest = rest + dt if still else _ZERO
    if rest > rest_time:
        bias = _lerp3(bias, k_bias_rest, gyr_lp)

    # strapdown integration
    rot = ((gyr[0] - bias[0]) * dt, (gyr[1] - bias[1]) * dt, (gyr[2] - bias[2]) * dt)
    q = quat_mul(q, quat_exp32(rot) if libm_free else quat_exp(rot))
    m = norm4(q[0], q[1], q[2], q[3])
    q = (q[0] / m, q[1] / m, q[2] / m, q[3] / m)
    ae = quat_rotate(q, acc)
    y = (b0 * ae[0] + b1 * x1[0] + b2 * x2[0] - a1 * y1[0] - a2 * y2[0],
         b0 * ae[1] + b1 * x1[1] + b2 * x2[1] - a1 * y1[1] - a2 * y2[1],
         b0 * ae[2] + b1 * x1[2] + b2 * x2[2] - a1 * y1[2] - a2 * y2[2])
    x2 = x1
    x1 = ae
    y2 = y1
    y1 = y

    # tilt so that the filtered acceleration points up; the filter memory turns with it
    n = _unit3(y)
    d = level_to_up(n)
    q = quat_mul(d, q)
    x1 = quat_rotate(d, x1)
    x2 = quat_rotate(d, x2)
    y1 = quat_rotate(d, y1)
    y2 = quat_rotate(d, y2)
    horizontal = math.sqrt(clamp_min(n[0] * n[0] + n[1] * n[1], _EPS24))
    aps = (atan2_32(horizontal, n[2]) if libm_free else math.atan2(horizontal, n[2])) / horizontal
    qc = quat_conj(q)
    corr = quat_rotate(qc, (n[1] * aps, -n[0] * aps, _ZERO * aps))
    bias = (bias[0] - k_bias * corr[0], bias[1] - k_bias * corr[1], bias[2] - k_bias * corr[2])
    grav = quat_rotate(qc, (_ZERO, _ZERO, _ONE))
    return q, grav, bias, x1, x2, y1, y2, gyr_lp, acc_lp, rest


@njit(cache=True, error_model="numpy")
def attitude_rows(ws, wts, xin, qo, go, cst, sq, sb, sx1, sx2, sy1, sy2, sgl, sal, srs, sst, L):
    """`attitude_update` for each of the L lanes. x = [acc; gyr]; out = q; gravity = R(q)ᵀẑ; the ten
    state rows are read, then written, lane by lane (so any overlap of the registers is harmless)."""
    X = ws[xin * L:(xin + 6) * L].reshape((6, L))
    Q = ws[qo * L:(qo + 4) * L].reshape((4, L))
    G = ws[go * L:(go + 3) * L].reshape((3, L))
    SQ = ws[sq * L:(sq + 4) * L].reshape((4, L))
    SB = ws[sb * L:(sb + 3) * L].reshape((3, L))
    SX1 = ws[sx1 * L:(sx1 + 3) * L].reshape((3, L))
    SX2 = ws[sx2 * L:(sx2 + 3) * L].reshape((3, L))
    SY1 = ws[sy1 * L:(sy1 + 3) * L].reshape((3, L))
    SY2 = ws[sy2 * L:(sy2 + 3) * L].reshape((3, L))
    SGL = ws[sgl * L:(sgl + 3) * L].reshape((3, L))
    SAL = ws[sal * L:(sal + 3) * L].reshape((3, L))
    SRS = ws[srs * L:(srs + 1) * L]
    SST = ws[sst * L:(sst + 1) * L]
    C = wts[cst:cst + 13]
    for l in range(L):
        q, grav, bias, x1, x2, y1, y2, gyr_lp, acc_lp, rest = attitude_update(
            (X[0, l], X[1, l], X[2, l]), (X[3, l], X[4, l], X[5, l]), SST[l] < _HALF,
            (SQ[0, l], SQ[1, l], SQ[2, l], SQ[3, l]), _get3(SB, l), _get3(SX1, l), _get3(SX2, l), _get3(SY1, l),
            _get3(SY2, l), _get3(SGL, l), _get3(SAL, l), SRS[l], C, False)
        for k in range(4):
            Q[k, l] = q[k]
            SQ[k, l] = q[k]
        _put3(G, l, grav)
        _put3(SB, l, bias)
        _put3(SX1, l, x1)
        _put3(SX2, l, x2)
        _put3(SY1, l, y1)
        _put3(SY2, l, y2)
        _put3(SGL, l, gyr_lp)
        _put3(SAL, l, acc_lp)
        SRS[l] = rest
        SST[l] = _ONE


@njit(cache=True, error_model="numpy")
def tilt_rows(ws, qi, ri, out, L):
    """models/attitude.py ``tilt_correct``: out = normalise(q ⊗ exp(r)), lane by lane (q and r
    are read before out is written)."""
    Q = ws[qi * L:(qi + 4) * L].reshape((4, L))
    R = ws[ri * L:(ri + 3) * L].reshape((3, L))
    Y = ws[out * L:(out + 4) * L].reshape((4, L))
    for l in range(L):
        q = quat_mul((Q[0, l], Q[1, l], Q[2, l], Q[3, l]), quat_exp((R[0, l], R[1, l], R[2, l])))
        m = norm4(q[0], q[1], q[2], q[3])
        Y[0, l] = q[0] / m
        Y[1, l] = q[1] / m
        Y[2, l] = q[2] / m
        Y[3, l] = q[3] / m


# ---- the interpreter --------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def exec_ops(prog, wts, ws, L):
    """Run every micro-op once on the workspace; rows are L lanes wide (1: one stream)."""
    nops = prog[H_NOPS]
    p = prog[H_OPS]
    for _ in range(nops):
        code = prog[p]
        a1 = prog[p + 1]
        a2 = prog[p + 2]
        a3 = prog[p + 3]
        a4 = prog[p + 4]
        a5 = prog[p + 5]
        a6 = prog[p + 6]
        a7 = prog[p + 7]
        if code == OP_COPY:
            copy_rows(ws, a1 * L, a2 * L, a3 * L)
        elif code == OP_DENSE:
            if L == 1:
                matvec_1(ws, wts, a1, a2, a3, a4, a5, a6)
            else:
                matvec_c(ws, wts, a1, a2, a3, a4, a5, a6, L)
            if a7 != ACT_IDENTITY:
                act_inplace(ws, a2 * L, a4 * L, a7)
        elif code == OP_LMUMEM:
            lmumem(ws, wts, a1, a2, a3, a4, a5, a6, a7, L)
        elif code == OP_ACT:
            if a1 != a2:
                copy_rows(ws, a2 * L, a1 * L, a3 * L)
            act_inplace(ws, a2 * L, a3 * L, a4)
        elif code == OP_ADD:
            add_rows(ws, a1 * L, a2 * L, a3 * L, a4 * L)
        elif code == OP_AFFINE:
            affine_rows(ws, wts, a1, a2, a3, L, a4, a5)
        elif code == OP_SCOPY:
            scopy_rows(ws, a1 * L, a2 * L, a3, a4 * L, a5 * L, a6 * L)
        elif code == OP_LSTM:
            lstm_cell(ws, a1 * L, a2 * L, a4 * L, a5 * L, a6)
            copy_rows(ws, a3 * L, a4 * L, a5 * L)
        elif code == OP_GRU:
            gru_cell(ws, a1 * L, a2 * L, a3 * L, a4 * L, a5 * L, a6)
            copy_rows(ws, a3 * L, a4 * L, a5 * L)
        elif code == OP_S4D:
            s4d_rows(ws, wts, a1, a2, a3, a4, a5, a6, a7, prog[p + 8], prog[p + 10], L, prog[p + 9])
        elif code == OP_GLU:
            glu_rows(ws, a1 * L, a2 * L, a3 * L, a4)
        elif code == OP_L2NORM:
            l2norm_rows(ws, a1, a2, a3, L)
        elif code == OP_LIF:
            lif_rows(ws, wts, a1, a2, a3, a4, L, a5, a6)
        elif code == OP_RMEAN:
            rmean_rows(ws, a1, a2, a3, a4, a5, L)
        elif code == OP_ATTITUDE:
            attitude_rows(ws, wts, a1, a2, a3, a4, a5, a6, a7, prog[p + 8], prog[p + 9], prog[p + 10],
                          prog[p + 11], prog[p + 12], prog[p + 13], prog[p + 14], L)
        elif code == OP_TILT:
            tilt_rows(ws, a1, a2, a3, L)
        elif code == OP_SOFTMAX:
            softmax_rows(ws, a1, a2, a3, L)
        p += REC


@njit(cache=True, error_model="numpy")
def to_lanes(W, src):
    """W[r, l] = src[l, r]: W is [R, L] (rows x lanes), src is [L, R] (one row per stream).
    Tiles of 16 lanes keep both sides in cache lines (a plain double loop is ~2.5x slower)."""
    R, L = W.shape
    if L == 1:
        s0 = src[0]
        for r in range(R):
            W[r, 0] = s0[r]
        return
    for l0 in range(0, L, 16):
        S16 = src[l0:l0 + 16]
        for r in range(R):
            Wr = W[r, l0:l0 + 16]
            for b in range(16):
                Wr[b] = S16[b, r]


@njit(cache=True, error_model="numpy")
def from_lanes(W, dst):
    """dst[l, r] = W[r, l]: the inverse of to_lanes."""
    R, L = W.shape
    if L == 1:
        d0 = dst[0]
        for r in range(R):
            d0[r] = W[r, 0]
        return
    for l0 in range(0, L, 16):
        D16 = dst[l0:l0 + 16]
        for r in range(R):
            Wr = W[r, l0:l0 + 16]
            for b in range(16):
                D16[b, r] = Wr[b]


def run(prog, wts, ws, state, x, y, T):
    """The one entry point: advance S = state.shape[0] streams by T samples.

    x [T*S, C] and y [T*S, O] are time-major (row t*S + s); ``state`` [S, state_size] is updated
    in place; ``wts`` holds the weights (read only), ``ws`` is the caller's workspace (at least
    prog[H_ROWS] * prog[H_LANES] floats; a thread's own, since the call releases the GIL). Step is
    this call with T = 1. Returns 0, or a negative code when the shapes do not fit the program
    (nothing is touched then).

    Streams go in chunks of prog[H_LANES] lanes side by side, then of half as many, ... down to
    MIN_LANES, and the rest one at a time; each group runs all T samples before the next
    (streams are independent), so its state stays in the workspace for the whole block."""
    S = state.shape[0]
    C = prog[H_C]
    O = prog[H_O]
    if T < 0 or x.shape[0] != T * S or x.shape[1] != C:
        return -1
    if y.shape[0] != T * S or y.shape[1] != O:
        return -2
    if state.shape[1] != prog[H_SSIZE]:
        return -3
    LMAX = prog[H_LANES]
    if ws.shape[0] < prog[H_ROWS] * LMAX or wts.shape[0] != prog[H_WS0]:
        return -4
    XR = prog[H_XROW]
    YR = prog[H_YROW]
    SB = prog[H_SBASE]
    SS = prog[H_SSIZE]
    s0 = 0
    while s0 < S:
        rest = S - s0
        L = LMAX
        while L > rest and L > MIN_LANES:
            L //= 2
        if L > rest:
            L = 1
        Sw = ws[SB * L:(SB + SS) * L].reshape((SS, L))
        to_lanes(Sw, state[s0:s0 + L])
        Xw = ws[XR * L:(XR + C) * L].reshape((C, L))
        Yw = ws[YR * L:(YR + O) * L].reshape((O, L))
        for t in range(T):
            to_lanes(Xw, x[t * S + s0:t * S + s0 + L])
            exec_ops(prog, wts, ws, L)  # one call site: LLVM inlines the interpreter once
            from_lanes(Yw, y[t * S + s0:t * S + s0 + L])
        from_lanes(Sw, state[s0:s0 + L])
        s0 += L
    return 0


RUN_SIGNATURE = "int64(int64[::1], float32[::1], float32[::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], int64)"
_runner = None


def get_runner():
    """:func:`run` compiled for exactly its one signature (C-contiguous float32 arrays, int64
    program). Built on first use, so importing this module compiles nothing; with an explicit
    signature numba never compiles another specialisation at call time: any other argument type
    raises ``TypeError`` at once (the executor then normalises its inputs and retries)."""
    global _runner
    if _runner is None:
        # nogil: a caller's other threads (the daemon's MQTT network thread) run while a block is computed
        _runner = njit(RUN_SIGNATURE, cache=True, nogil=True, error_model="numpy")(run)
    return _runner
