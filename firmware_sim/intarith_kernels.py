"""Numba kernels of the integer step (firmware_sim/intarith.py lowers a bundle's program to them;
firmware_sim/c/edge_int.c is the same arithmetic in C99, operation for operation).

Number formats
--------------
* Registers are integers of at most 16 bits (``qmax`` = 32767) with a per-register number of
  fractional bits f: value = q · 2^-f ("Q(15-f).f"). Floats appear only in float registers (the
  attitude filter's input and outputs).
* Weights are int8 with one scale per output channel; biases are int32 in the accumulator's unit.
  Accumulators are 32-bit in C (the planner proves |Σ| < 2^31 for every row); here int64.
* Requantisation: out = (acc · M + 2^(S-1)) >> S with a 16-bit multiplier M ∈ [2^14, 2^15) and a
  shift S per channel (round half up, arithmetic shift), then saturation to ±qmax.
* tanh, sigmoid, Φ (for gelu(x) = x·Φ(x)) and exp (softmax): 513-entry Q15 tables over [-8, 8]
  (step 1/32) read with linear interpolation from a Q12 argument (|error| ≤ 1.4e-4, tests); the
  result is Q15. Arguments saturate at ±8 (so gelu's output too; exp is only read at x ≤ 0).
* State words are int32 with per-state fractional bits and their own limit (``slim``): the LSTM
  cell c, the LMU memory m, the LIF potential v. The LSTM h is Q15.

Floats (attitude filter, tilt correction) are float32 scalar code with no fastmath: the engine's own
filter update (`edge.engine.kernels.attitude_update`) with sin, cos and atan2 from
`edge.engine.trig32` (Cephes single-precision polynomials, no libm), so that C compiled with
``-ffp-contract=off`` computes the same bits on any IEEE float32 machine. sqrt is IEEE (exact).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge.engine.kernels import (_HALF, _ONE, F32, _get3, _put3, attitude_update, norm4, quat_exp32,
                                 quat_mul)

# record: opcode + up to 15 int64 fields (offsets into the typed arrays, sizes, formats)
REC = 16
OP_QUANT, OP_DEQUANT, OP_DENSE, OP_AFFINE, OP_ACT, OP_ADD, OP_SHIFT, OP_LSTM, OP_LMUMEM, OP_LIF, \
    OP_ATTITUDE, OP_TILT, OP_WINDOW, OP_RMEAN, OP_SOFTMAX, OP_GRU = range(1, 17)
ACT_IDENTITY, ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_GELU = 0, 1, 2, 3, 4
LUT_N = 513                         # entries per table: [-8, 8] in steps of 1/32
LUT_TANH, LUT_SIGMOID, LUT_PHI, LUT_EXP = 0, LUT_N, 2 * LUT_N, 3 * LUT_N  # offsets in the int16 weights
Q12 = 12                            # the table argument format
Q15 = 15


def lut_tables() -> np.ndarray:
    """tanh, sigmoid, Φ (normal CDF), exp at -8 + k/32, k = 0..512, in Q15 saturated to 32767."""
    x = -8.0 + np.arange(LUT_N) / 32.0
    phi = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    tabs = [np.tanh(x), 1.0 / (1.0 + np.exp(-x)), phi, np.exp(x)]
    return np.concatenate([np.clip(np.round(t * 32768.0), -32768, 32767) for t in tabs]).astype(np.int16)


# ---- integer helpers ---------------------------------------------------------------------------
@njit(cache=True, inline="always")
def sat(v, lim):
    return lim if v > lim else (-lim - 1 if v < -lim - 1 else v)


@njit(cache=True, inline="always")
def shr(v, s):
    """v · 2^-s rounded half up (s > 0), or v · 2^-s exactly (s ≤ 0)."""
    if s > 0:
        return (v + (np.int64(1) << (s - 1))) >> s
    return v << (-s)


@njit(cache=True, inline="always")
def requant(acc, m, s):
    return (acc * m + (np.int64(1) << (s - 1))) >> s


@njit(cache=True)
def lut(W16, table, x):
    """Q12 argument -> Q15 value of the table, linear interpolation between entries."""
    u = sat(x, 32767) + 32768                  # 0 .. 65535
    i = u >> 7
    fr = u & 127
    a = np.int64(W16[table + i])
    b = np.int64(W16[table + min(i + 1, LUT_N - 1)])
    return a + (((b - a) * fr + 64) >> 7)


@njit(cache=True)
def activate(W16, code, v, f_in, f_out, qmax):
    """One activation from Q(f_in) to Q(f_out); tanh, sigmoid and gelu go through the Q15 tables."""
    if code == ACT_TANH or code == ACT_SIGMOID:
        y = lut(W16, LUT_TANH if code == ACT_TANH else LUT_SIGMOID, shr(v, f_in - Q12))
        return sat(shr(y, Q15 - f_out), qmax)
    if code == ACT_GELU:
        x = sat(shr(v, f_in - Q12), 32767)
        return sat(shr(shr(x * lut(W16, LUT_PHI, x), Q15), Q12 - f_out), qmax)
    if code == ACT_RELU and v < 0:
        return np.int64(0)
    return sat(shr(v, f_in - f_out), qmax)


# ---- integer ops -------------------------------------------------------------------------------
@njit(cache=True)
def quant(wsf, wsi, src, dst, n, f, qmax):
    """float32 -> Q(f): v = x·2^f (exact), truncate, round half away from zero, saturate."""
    scale = F32(2.0 ** f)       # a power of two: exact, as C's repeated doubling
    lim = F32(qmax)
    for k in range(n):
        v = wsf[src + k] * scale
        if v >= lim:
            wsi[dst + k] = qmax
        elif v <= -lim - _ONE:
            wsi[dst + k] = -qmax - 1
        else:
            t = np.int64(np.int32(v))
            r = v - F32(t)
            if r >= _HALF:
                t += 1
            elif r <= -_HALF:
                t -= 1
            wsi[dst + k] = t


@njit(cache=True)
def dequant(wsi, wsf, src, dst, n, f):
    scale = F32(2.0 ** -f)
    for k in range(n):
        wsf[dst + k] = F32(wsi[src + k]) * scale


@njit(cache=True)
def dense(wsi, W8, W16, W32, xin, out, I, O, w, b, mul, sh, act, f_out, idx, qmax):
    """out = act(W·x + b): int8 weights [O, I] row-major, int32 bias, per-row M and S to the
    output format (identity, relu) or to Q12 (tanh, sigmoid, gelu). idx ≥ 0: x is a 0/1 spike
    vector; its active inputs are listed at wsi[idx:] once, and each output only accumulates its
    weights there (synaptic accumulates, no multiplies)."""
    n = 0
    if idx >= 0:
        for i in range(I):
            if wsi[xin + i] != 0:
                wsi[idx + n] = i
                n += 1
    for o in range(O):
        acc = np.int64(W32[b + o])
        row = w + o * I
        if idx >= 0:
            for k in range(n):
                acc += W8[row + wsi[idx + k]]
        else:
            for i in range(I):
                acc += np.int64(W8[row + i]) * wsi[xin + i]
        v = requant(acc, np.int64(W32[mul + o]), W32[sh + o])
        if act == ACT_TANH or act == ACT_SIGMOID or act == ACT_GELU:
            wsi[out + o] = activate(W16, act, v, Q12, f_out, qmax)
        else:
            wsi[out + o] = activate(W16, act, v, f_out, f_out, qmax)


@njit(cache=True)
def affine(wsi, W8, W32, xin, out, n, w, b, mul, sh, qmax):
    """out = x·scale + shift per channel: the scale is an int8 (±127 or 0) times the channel's M, S."""
    for k in range(n):
        acc = np.int64(W8[w + k]) * wsi[xin + k] + W32[b + k]
        wsi[out + k] = sat(requant(acc, np.int64(W32[mul + k]), W32[sh + k]), qmax)


@njit(cache=True)
def lstm(wsi, si, W8, W16, W32, xin, out, I, H, w, b, mx, sx, mh, sh, h, c, fc, slim, tmp):
    """torch LSTM cell (gates i, f, g, o). W = [W_ih | W_hh] int8 [4H, I+H], one scale per row;
    the x part and the h part (Q15) are requantised to Q12 separately and added. c: int32 Q(fc)."""
    for o in range(4 * H):
        row = w + o * (I + H)
        ax = np.int64(W32[b + o])
        for i in range(I):
            ax += np.int64(W8[row + i]) * wsi[xin + i]
        ah = np.int64(0)
        for j in range(H):
            ah += np.int64(W8[row + I + j]) * si[h + j]
        wsi[tmp + o] = requant(ax, np.int64(W32[mx + o]), W32[sx + o]) + requant(ah, np.int64(W32[mh + o]), W32[sh + o])
    for j in range(H):
        ig = lut(W16, LUT_SIGMOID, wsi[tmp + j])
        fg = lut(W16, LUT_SIGMOID, wsi[tmp + H + j])
        gg = lut(W16, LUT_TANH, wsi[tmp + 2 * H + j])
        og = lut(W16, LUT_SIGMOID, wsi[tmp + 3 * H + j])
        cn = sat(shr(fg * si[c + j], Q15) + shr(ig * gg, 2 * Q15 - fc), slim)
        si[c + j] = cn
        hn = sat(shr(og * lut(W16, LUT_TANH, shr(cn, fc - Q12)), Q15), 32767)
        si[h + j] = hn
        wsi[out + j] = hn


@njit(cache=True)
def gru(wsi, si, W8, W16, W32, xin, out, I, H, wx, bx, mx, sx, wh, bh, mh, shh, h, tmp):
    """torch GRU cell (gates r, z, n): W_ih x + b_ih and W_hh h + b_hh (int8 rows, h Q15), each
    requantised to Q12; n = tanh(gi_n + r·gh_n); h = (1 − z)·n + z·h in Q15."""
    for o in range(3 * H):
        ax = np.int64(W32[bx + o])
        for i in range(I):
            ax += np.int64(W8[wx + o * I + i]) * wsi[xin + i]
        ah = np.int64(W32[bh + o])
        for j in range(H):
            ah += np.int64(W8[wh + o * H + j]) * si[h + j]
        wsi[tmp + o] = requant(ax, np.int64(W32[mx + o]), W32[sx + o])
        wsi[tmp + 3 * H + o] = requant(ah, np.int64(W32[mh + o]), W32[shh + o])
    for j in range(H):
        r = lut(W16, LUT_SIGMOID, np.int64(wsi[tmp + j]) + wsi[tmp + 3 * H + j])
        z = lut(W16, LUT_SIGMOID, np.int64(wsi[tmp + H + j]) + wsi[tmp + 4 * H + j])
        n = lut(W16, LUT_TANH, wsi[tmp + 2 * H + j] + shr(r * wsi[tmp + 5 * H + j], Q15))
        hn = sat(shr((32768 - z) * n + z * si[h + j], Q15), 32767)
        si[h + j] = hn
        wsi[out + j] = hn


@njit(cache=True)
def lmumem(wsi, si, W16, u, out, ch, d, a, fa, bb, s_in, m, slim, s_out, tmp, qmax):
    """LMU linear memory: m[c] = Ā·m[c] + u[c]·B̄. Ā: int16 Q(fa); B̄·u lands in m's format by a
    shift s_in; m: int32 words; out = m >> s_out, saturated."""
    for k in range(ch):
        mk = m + k * d
        for i in range(d):
            acc = np.int64(0)
            for j in range(d):
                acc += np.int64(W16[a + i * d + j]) * si[mk + j]
            wsi[tmp + i] = sat(shr(acc, fa) + shr(np.int64(W16[bb + i]) * wsi[u + k], s_in), slim)
        for i in range(d):
            si[mk + i] = wsi[tmp + i]
            wsi[out + k * d + i] = sat(shr(np.int64(wsi[tmp + i]), s_out), qmax)


@njit(cache=True)
def lif(wsi, si, W32, xin, out, n, v, k, thr, s_in, slim):
    """h = v + (x − v)/τ with 1/τ as Q15 k; spike where h ≥ θ; v = 0 after a spike; out = 0/1 (Q0)."""
    for j in range(n):
        vv = np.int64(si[v + j])
        hh = sat(vv + shr((shr(np.int64(wsi[xin + j]), s_in) - vv) * W32[k + j], Q15), slim)
        s = hh >= W32[thr + j]
        si[v + j] = 0 if s else hh
        wsi[out + j] = 1 if s else 0


@njit(cache=True)
def window(wsi, si, xin, buf, cat, I, k):
    """Causal conv input: cat[i, :] = [buf[i, :], in[i]] ([I, k]); then buf[i, :] = cat[i, 1:]."""
    for i in range(I):
        for j in range(k - 1):
            wsi[cat + i * k + j] = si[buf + i * (k - 1) + j]
        wsi[cat + i * k + k - 1] = wsi[xin + i]
        for j in range(k - 1):
            si[buf + i * (k - 1) + j] = wsi[cat + i * k + j + 1]


@njit(cache=True, inline="always")
def div_round(a, b):
    """a / b rounded half away from zero, b > 0 (the same in C: no floor division of negatives)."""
    q = (2 * abs(a) + b) // (2 * b)
    return -q if a < 0 else q


@njit(cache=True, inline="always")
def get64(si, lo, hi):
    """The int64 held in two state words: si[hi] the high 32 bits (signed), si[lo] the low 32."""
    return np.int64(si[hi]) * 4294967296 + (np.int64(si[lo]) & 0xFFFFFFFF)


@njit(cache=True, inline="always")
def put64(si, lo, hi, v):
    top = v >> 32                                   # floor: v = top·2^32 + low, 0 <= low < 2^32
    si[hi] = np.int32(top)
    si[lo] = np.int32(v - top * 4294967296)         # the low 32 bits (wraps into int32's range)


@njit(cache=True)
def rmean(wsi, si, xin, out, n, sm, cnt, s_out, qmax):
    """sum += in (same format); count += 1; out = sum / count, rounded, shifted to the output's
    format. Sum (words sm: [2, n], low words then high words) and count (words cnt: low, high) are
    int64, exact: 2^47 · 2^16 before a 16-bit input's sum could overflow."""
    c = get64(si, cnt, cnt + 1) + 1
    put64(si, cnt, cnt + 1, c)
    for j in range(n):
        v = get64(si, sm + j, sm + n + j) + wsi[xin + j]
        put64(si, sm + j, sm + n + j, v)
        wsi[out + j] = sat(shr(div_round(v, c), s_out), qmax)


@njit(cache=True)
def softmax(wsi, W16, xin, out, n, f_in):
    """exp(x − max) from the Q15 table at a Q12 argument ≤ 0, normalised: out Q15."""
    mx = wsi[xin]
    for j in range(1, n):
        mx = max(mx, wsi[xin + j])
    total = np.int64(0)
    for j in range(n):
        e = lut(W16, LUT_EXP, shr(np.int64(wsi[xin + j]) - mx, f_in - Q12))
        wsi[out + j] = e
        total += e
    for j in range(n):
        wsi[out + j] = (np.int64(wsi[out + j]) << Q15) // total


@njit(cache=True)
def attitude(wsf, sf, WF, xin, qo, go, cst, st):
    """The engine's attitude filter update (edge/engine/kernels.py attitude_update) for one stream,
    libm-free. 27 state words from st: q 4, then bias x1 x2 y1 y2 gyr_lp acc_lp (3 each), rest, started."""
    X = wsf[xin:xin + 6]
    B = sf[st + 4:st + 25].reshape((7, 3)).T   # _get3(B, k): the k-th 3-vector after q
    q, grav, bias, x1, x2, y1, y2, gyr_lp, acc_lp, rest = attitude_update(
        (X[0], X[1], X[2]), (X[3], X[4], X[5]), sf[st + 26] < _HALF, (sf[st], sf[st + 1], sf[st + 2], sf[st + 3]),
        _get3(B, 0), _get3(B, 1), _get3(B, 2), _get3(B, 3), _get3(B, 4), _get3(B, 5), _get3(B, 6), sf[st + 25],
        WF[cst:cst + 13], True)
    for k in range(4):
        wsf[qo + k] = q[k]
        sf[st + k] = q[k]
    for k in range(3):
        wsf[go + k] = grav[k]
    _put3(B, 0, bias)
    _put3(B, 1, x1)
    _put3(B, 2, x2)
    _put3(B, 3, y1)
    _put3(B, 4, y2)
    _put3(B, 5, gyr_lp)
    _put3(B, 6, acc_lp)
    sf[st + 25] = rest
    sf[st + 26] = _ONE


@njit(cache=True)
def tilt(wsf, qi, ri, out):
    q = quat_mul((wsf[qi], wsf[qi + 1], wsf[qi + 2], wsf[qi + 3]), quat_exp32((wsf[ri], wsf[ri + 1], wsf[ri + 2])))
    m = norm4(q[0], q[1], q[2], q[3])
    for k in range(4):
        wsf[out + k] = q[k] / m


# ---- the interpreter ---------------------------------------------------------------------------
@njit(cache=True)
def step_ops(rec, W8, W16, W32, WF, wsi, wsf, si, sf, qmax):
    for p in range(rec.shape[0]):
        r = rec[p]
        code = r[0]
        if code == OP_QUANT:
            quant(wsf, wsi, r[1], r[2], r[3], r[4], qmax)
        elif code == OP_DEQUANT:
            dequant(wsi, wsf, r[1], r[2], r[3], r[4])
        elif code == OP_DENSE:
            dense(wsi, W8, W16, W32, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], qmax)
        elif code == OP_AFFINE:
            affine(wsi, W8, W32, r[1], r[2], r[3], r[4], r[5], r[6], r[7], qmax)
        elif code == OP_ACT:
            for k in range(r[3]):
                wsi[r[2] + k] = activate(W16, r[4], np.int64(wsi[r[1] + k]), r[5], r[6], qmax)
        elif code == OP_ADD:
            for k in range(r[4]):
                wsi[r[3] + k] = sat(shr(np.int64(wsi[r[1] + k]), r[5]) + shr(np.int64(wsi[r[2] + k]), r[6]), qmax)
        elif code == OP_SHIFT:
            for k in range(r[3]):
                wsi[r[2] + k] = sat(shr(np.int64(wsi[r[1] + k]), r[4]), qmax)
        elif code == OP_LSTM:
            lstm(wsi, si, W8, W16, W32, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
                 r[13], r[14], r[15])
        elif code == OP_LMUMEM:
            lmumem(wsi, si, W16, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], qmax)
        elif code == OP_LIF:
            lif(wsi, si, W32, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
        elif code == OP_ATTITUDE:
            attitude(wsf, sf, WF, r[1], r[2], r[3], r[4], r[5])
        elif code == OP_TILT:
            tilt(wsf, r[1], r[2], r[3])
        elif code == OP_WINDOW:
            window(wsi, si, r[1], r[2], r[3], r[4], r[5])
        elif code == OP_RMEAN:
            rmean(wsi, si, r[1], r[2], r[3], r[4], r[5], r[6], qmax)
        elif code == OP_SOFTMAX:
            softmax(wsi, W16, r[1], r[2], r[3], r[4])
        elif code == OP_GRU:
            gru(wsi, si, W8, W16, W32, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
                r[13], r[14])


@njit(cache=True)
def run(rec, W8, W16, W32, WF, wsi, wsf, state, X, Y, x_off, y_off, qmax, peak_ws, peak_st):
    """X [T, streams, C] float32 -> Y [T, streams, O] (the float register at y_off); state
    [streams, words] float32 whose words hold int32 bits for integer states. peak_*: max |value|
    per integer row seen (calibration), or empty arrays."""
    T, S, C = X.shape
    O = Y.shape[2]
    track = peak_ws.shape[0] > 0
    for s in range(S):
        sf = state[s]
        si = sf.view(np.int32)
        for t in range(T):
            for k in range(C):
                wsf[x_off + k] = X[t, s, k]
            step_ops(rec, W8, W16, W32, WF, wsi, wsf, si, sf, qmax)
            for k in range(O):
                Y[t, s, k] = wsf[y_off + k]
            if track:
                for k in range(wsi.shape[0]):
                    a = abs(np.int64(wsi[k]))
                    if a > peak_ws[k]:
                        peak_ws[k] = a
                for k in range(si.shape[0]):
                    a = abs(np.int64(si[k]))
                    if a > peak_st[k]:
                        peak_st[k] = a
