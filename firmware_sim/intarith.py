"""The integer reference: a bundle's step program in int8/int16/int32 fixed point (docs/firmware.md).

    from edge.firmware_sim.intarith import load_int8
    model = load_int8("imu-attitude")            # an edge.runtime.Model: step/block/init_state
    state = model.init_state(1)
    y = model.step(x, state)

Lowering: every register gets a number of fractional bits (16-bit values), every matrix int8 with
one scale per output row, every requantisation a 16-bit multiplier and a shift, and the states
their own fixed-point words (LSTM c, LMU memory, LIF potential: int32, or fewer bits with
``state_bits``). The formats come from a calibration run: the program runs once with wide
formats on calibration data, records each register's and state's peak, and takes the most
fractional bits that keep peak × headroom in range. The attitude filter and the tilt correction
stay float32 (polynomial sin/cos/atan2, IEEE sqrt): they are geometry, not a network.

Kernels: firmware_sim/intarith_kernels.py; the same arithmetic in C: firmware_sim/c/edge_int.c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge.firmware_sim import intarith_kernels as K

INT_OPS = ("dense", "affine", "act", "add", "concat", "conv", "lstm", "gru", "lmu_memory", "lif", "running_mean",
           "softmax", "attitude_filter", "tilt_correct")
ACTS = {"identity": K.ACT_IDENTITY, "relu": K.ACT_RELU, "tanh": K.ACT_TANH, "sigmoid": K.ACT_SIGMOID,
        "gelu": K.ACT_GELU}
TABLE_ACTS = (K.ACT_TANH, K.ACT_SIGMOID, K.ACT_GELU)   # requantised to the Q12 table argument
QMAX = 32767                    # 16-bit registers
CAL_QMAX = 2 ** 31 - 1          # calibration: wide registers, so nothing saturates
CAL_F = 8                       # calibration: fractional bits of every free register
CAL_STATE_F = 16
HEADROOM = 1.25                 # registers: peak × 1.25 must fit
STATE_HEADROOM = 4.0            # states: may drift past the calibration range on other data
ATTITUDE_STATE = ("state_q", "state_bias", "state_x1", "state_x2", "state_y1", "state_y2", "state_gyr_lp",
                  "state_acc_lp", "state_rest", "state_started")
ATTITUDE_CONSTANTS = ("dt", "b0", "b1", "b2", "a1", "a2", "k_rest", "k_bias_rest", "rest_gyr", "rest_acc",
                      "rest_time", "k_bias")


class UnsupportedInt(ValueError):
    """The program has an op (or activation) with no integer kernel."""


@dataclass
class Plan:
    """A lowered integer step: records and typed constant arrays, workspace and state layout."""
    rec: np.ndarray                 # int64 [ops, 16]
    W8: np.ndarray
    W16: np.ndarray
    W32: np.ndarray
    WF: np.ndarray
    wsi_size: int
    wsf_size: int
    state_init: np.ndarray          # float32 [words] (int32 bits for integer states)
    x_off: int
    y_off: int
    C: int
    O: int
    qmax: int
    formats: dict                   # register / state -> fractional bits
    int_regs: dict                  # register -> (wsi offset, length)
    int_states: dict                # state -> (word offset, length)
    ops: list                       # one line per record (kind and formats), for model.c's header and docs


def check_program(program: dict) -> None:
    """Refuse, naming it, the first op or activation without an integer kernel."""
    for i, op in enumerate(program["ops"]):
        if op["op"] not in INT_OPS:
            raise UnsupportedInt(f"op {i} ({op['op']}) has no integer kernel (integer ops: {', '.join(INT_OPS)})")
        if op.get("act", "identity") not in ACTS:
            raise UnsupportedInt(f"op {i} ({op['op']}): activation {op['act']!r} has no integer kernel "
                                 f"(have: {', '.join(ACTS)})")


def multiplier(r: float) -> tuple[int, int]:
    """r ≈ M·2^-S with M ∈ [2^14, 2^15); (0, 1) for r too small to matter."""
    if r <= 0 or r < 2.0 ** -45:
        return 0, 1
    S = 14 - math.floor(math.log2(r))
    M = round(r * 2.0 ** S)
    if M == 1 << 15:
        M, S = M >> 1, S - 1
    if S < 1:
        raise ValueError(f"requantisation factor {r:g} is too large for a 16-bit multiplier")
    return M, S


def frac_bits(peak: float, limit: int, headroom: float, lo: int = -8, hi: int = 24) -> int:
    if peak <= 0:
        return min(hi, 15)
    return int(min(hi, max(lo, math.floor(math.log2(limit / (peak * headroom))))))


def qname(f) -> str:
    return f"Q{int(f)}" if np.ndim(f) == 0 else "Q[" + ",".join(str(v) for v in np.unique(f)) + "]"


def row_scales(w: np.ndarray):
    """int8 weights with one scale per row: (wq, scale)."""
    s = np.abs(w).max(axis=1) / 127.0
    s = np.where(s > 0, s, 1.0 / 127.0)
    return np.clip(np.round(w / s[:, None]), -127, 127).astype(np.int8), s


class _Lowering:
    """One pass over the program: allocates registers, states and constants, and emits records.
    ``calibrating``: wide formats (int32 registers at Q8, states at Q16) instead of ``formats``."""

    def __init__(self, meta: dict, weights: dict, formats: dict, calibrating: bool, state_bits: int, a_bits: int):
        self.meta, self.weights, self.formats = meta, weights, formats
        self.cal, self.state_bits, self.a_bits = calibrating, state_bits, a_bits
        self.qmax = CAL_QMAX if calibrating else QMAX
        tables = K.lut_tables()
        self.chunks = {"W8": [], "W16": [tables], "W32": [], "WF": []}
        self.sizes = {"W8": 0, "W16": tables.size, "W32": 0, "WF": 0}
        self.wsi = self.wsf = self.words = 0
        self.regs = {}          # name -> ("q", off, f) | ("f", off)
        self.spikes = set()     # registers that hold 0/1 spikes (LIF outputs and concats of them)
        self.states = {}        # state name -> (word offset, length, fractional bits or None)
        self.init = {}
        self.rec, self.ops = [], []
        program = meta["program"]
        self.reg_len = program["registers"]
        self.state_shape = {s["name"]: s["shape"] for s in meta["state"]}
        self.state_init = {s["name"]: s.get("init", 0.0) for s in meta["state"]}
        x = self._freg("x", self.reg_len["x"])
        check_program(program)
        for op in program["ops"]:
            getattr(self, "_" + op["op"])(op)
        y = self.float_reg(program["output"])
        self.x_off, self.y_off = x, y

    # ---- allocation --------------------------------------------------------------------------
    def const(self, kind: str, arr) -> int:
        dtype = {"W8": np.int8, "W16": np.int16, "W32": np.int32, "WF": np.float32}[kind]
        a = np.ascontiguousarray(arr, dtype=dtype).ravel()
        off = self.sizes[kind]
        self.chunks[kind].append(a)
        self.sizes[kind] += a.size
        return off

    def w32(self, arr) -> int:
        a = np.asarray(arr)
        if np.any(np.abs(a.astype(np.float64)) > 2 ** 31 - 1):
            raise ValueError("a bias or multiplier does not fit in int32")
        return self.const("W32", a.astype(np.int64))

    def _freg(self, name, n) -> int:
        off, self.wsf = self.wsf, self.wsf + n
        self.regs[name] = ("f", off)
        return off

    def fmt(self, name, forced=None) -> int:
        f = forced if forced is not None else (CAL_F if self.cal else self.formats[name])
        self.formats[name] = f
        return f

    def _ireg(self, name, n, forced=None) -> tuple[int, int]:
        f = self.fmt(name, forced)
        off, self.wsi = self.wsi, self.wsi + n
        self.regs[name] = ("q", off, f)
        return off, f

    def scratch(self, n) -> int:
        off, self.wsi = self.wsi, self.wsi + n
        return off

    def state(self, name, dom, forced=None) -> tuple[int, int | None]:
        n = int(np.prod(self.state_shape[name]))
        off, self.words = self.words, self.words + n
        f = None
        if dom == "q":
            f = forced if forced is not None else (CAL_STATE_F if self.cal else self.formats["state:" + name])
        self.states[name] = (off, n, f)
        init = float(self.state_init[name])
        self.init[name] = np.full(n, init, np.float32) if f is None else \
            np.full(n, round(init * 2.0 ** f), np.int32).view(np.float32)
        return off, f

    def slim(self) -> int:
        return CAL_QMAX if self.cal else 2 ** (self.state_bits - 1) - 1

    def emit(self, code, *fields, summary=""):
        r = [code, *[int(v) for v in fields]]
        self.rec.append(r + [0] * (K.REC - len(r)))
        self.ops.append(summary)

    # ---- domain changes ----------------------------------------------------------------------
    def int_reg(self, name) -> tuple[int, int]:
        r = self.regs[name]
        if r[0] == "q":
            return r[1], r[2]
        if name + "@q" in self.regs:      # a float register already quantised once
            return self.regs[name + "@q"][1:]
        n = self.reg_len[name]
        off, f = self._ireg(name + "@q", n)
        self.emit(K.OP_QUANT, r[1], off, n, f, summary=f"quant {name} -> Q{f}")
        return off, f

    def uniform_reg(self, name) -> tuple[int, int]:
        """The register in one format: a concat of registers in different formats (their
        fractional bits per element) is shifted, run by run, to the fewest fractional bits."""
        off, f = self.int_reg(name)
        if np.ndim(f) == 0:
            return off, f
        if name + "@u" in self.regs:
            return self.regs[name + "@u"][1:]
        fu = int(f.min())
        out, _ = self._ireg(name + "@u", f.size, forced=fu)
        start = 0
        for end in [*np.flatnonzero(np.diff(f)) + 1, f.size]:
            self.emit(K.OP_SHIFT, off + start, out + start, end - start, int(f[start]) - fu,
                      summary=f"align {name}[{start}:{end}] Q{int(f[start])} -> Q{fu}")
            start = end
        return out, fu

    def float_reg(self, name) -> int:
        r = self.regs[name]
        if r[0] == "f":
            return r[1]
        src, f = self.uniform_reg(name)
        n = self.reg_len[name]
        off = self._freg(name + "@f", n)
        self.emit(K.OP_DEQUANT, src, off, n, f, summary=f"dequant {name}")
        return off

    # ---- ops ---------------------------------------------------------------------------------
    def _attitude_filter(self, op):
        xin = self.float_reg(op["in"])
        q = self._freg(op["out"], 4)
        g = self._freg(op["gravity"], 3)
        c = [op[k] for k in ATTITUDE_CONSTANTS] + [3.0 * op["rest_gyr"]]  # 3·rest_gyr in float64, as torch
        cst = self.const("WF", np.array(c, np.float32))
        st = self.words
        for k in ATTITUDE_STATE:
            self.state(op[k], "f")
        if self.words - st != 27:
            raise ValueError("attitude_filter state sizes differ from q 4, 7 x 3, rest 1, started 1")
        self.emit(K.OP_ATTITUDE, xin, q, g, cst, st, summary="attitude_filter (float32)")

    def _tilt_correct(self, op):
        q, r = self.float_reg(op["q"]), self.float_reg(op["r"])
        out = self._freg(op["out"], 4)
        self.emit(K.OP_TILT, q, r, out, summary="tilt_correct (float32)")

    def _concat(self, op):
        """A copy: each part keeps its own format (fractional bits per element), so a memory with a
        wide range does not take the precision of a small-range part beside it."""
        n = self.reg_len[op["out"]]
        out = self.scratch(n)
        fs, k = [], 0
        for name in op["ins"]:
            src, f = self.int_reg(name)
            m = self.reg_len[name]
            self.emit(K.OP_SHIFT, src, out + k, m, 0, summary=f"concat {name}")
            fs.append(np.broadcast_to(f, (m,)))
            k += m
        f = np.concatenate(fs).astype(np.int64)
        self.regs[op["out"]] = ("q", out, int(f[0]) if np.all(f == f[0]) else f)
        if all(name in self.spikes for name in op["ins"]):
            self.spikes.add(op["out"])

    def _add(self, op):
        a, fa = self.uniform_reg(op["a"])
        b, fb = self.uniform_reg(op["b"])
        n = self.reg_len[op["out"]]
        out, fo = self._ireg(op["out"], n)
        self.emit(K.OP_ADD, a, b, out, n, fa - fo, fb - fo, summary=f"add -> Q{fo}")

    def _act(self, op):
        code = self._act_code(op["act"])
        src, fi = self.uniform_reg(op["in"])
        n = self.reg_len[op["out"]]
        out, fo = self._ireg(op["out"], n)
        self.emit(K.OP_ACT, src, out, n, code, fi, fo, summary=f"act {op['act']} Q{fi} -> Q{fo}")

    @staticmethod
    def _act_code(name):
        if name not in ACTS:
            raise UnsupportedInt(f"activation {name!r} has no integer kernel (have: {', '.join(ACTS)})")
        return ACTS[name]

    def requant_table(self, scales, f_in, f_out):
        f_in = np.broadcast_to(f_in, np.shape(scales))
        mul, sh = zip(*(multiplier(float(s) * 2.0 ** (f_out - f)) for s, f in zip(scales, f_in)))
        return self.w32(mul), self.w32(sh)

    @staticmethod
    def fold_formats(W, f, k=1):
        """Weights [O, I·k] over an input whose elements have fractional bits f [I]: fold 2^(F − f_i)
        into column i so the product is in one format F = max f (a per-column activation scale)."""
        if np.ndim(f) == 0:
            return W, int(f)
        F = int(f.max())
        return W * np.repeat(2.0 ** (F - f), k)[None, :], F

    def check_acc(self, wq, bq, what):
        worst = np.abs(wq.astype(np.int64)).sum(axis=1) * (QMAX + 1) + np.abs(bq)
        if not self.cal and worst.max() >= 2 ** 31:
            raise ValueError(f"{what}: a 32-bit accumulator could overflow (worst row {int(worst.max())})")

    def matrix(self, op, W, fi, src, out, fo, code, what, spiking=False):
        """out = act(W·src + b) with W [O, I] float over an input in Q(fi): int8 rows, int32 bias,
        requantised to Q(fo), or to the table argument Q12 for tanh/sigmoid/gelu. ``spiking``: the
        input is 0/1 spikes, accumulated at its active inputs only."""
        wq, s = row_scales(W)
        b = np.asarray(self.weights[op["bias"]], np.float64) if op.get("bias") else np.zeros(W.shape[0])
        bq = np.round(b / (s * 2.0 ** -fi)).astype(np.int64)
        self.check_acc(wq, bq, f"{what} {op['weight']}")
        mul, sh = self.requant_table(s, fi, K.Q12 if code in TABLE_ACTS else fo)
        idx = self.scratch(W.shape[1]) if spiking else -1
        self.emit(K.OP_DENSE, src, out, W.shape[1], W.shape[0], self.const("W8", wq), self.w32(bq), mul, sh, code,
                  fo, idx, summary=f"{what} {W.shape[0]}x{W.shape[1]} {op.get('act', 'identity')} Q{fi} -> Q{fo}"
                  + (" (spike input: accumulates)" if spiking else ""))

    def _dense(self, op):
        code = self._act_code(op.get("act", "identity"))
        W = np.asarray(self.weights[op["weight"]], np.float64)
        xin, fi = self.int_reg(op["in"])
        W, fi = self.fold_formats(W, fi)
        out, fo = self._ireg(op["out"], W.shape[0])
        self.matrix(op, W, fi, xin, out, fo, code, "dense", op["in"] in self.spikes)

    def _conv(self, op):
        """A causal conv as a window of the last k inputs (state: the k − 1 before, in the input's
        format) and a dense over it."""
        W = np.asarray(self.weights[op["weight"]], np.float64)
        O, I, k = W.shape
        xin, fi = self.int_reg(op["in"])
        W, fi = self.fold_formats(W.reshape(O, I * k), fi, k)
        if op.get("state_buf") is None and k > 1:
            raise ValueError(f"conv {op['weight']}: kernel {k} without a state buffer")
        out, fo = self._ireg(op["out"], O)
        src = xin
        if op.get("state_buf") is not None:
            buf, _ = self.state(op["state_buf"], "q", forced=fi)
        if k > 1:
            src = self.scratch(I * k)
            self.emit(K.OP_WINDOW, xin, buf, src, I, k, summary=f"conv window {I}x{k}")
        self.matrix(op, W, fi, src, out, fo, K.ACT_IDENTITY, "conv", op["in"] in self.spikes)

    def _running_mean(self, op):
        n = self.reg_len[op["out"]]
        xin, fi = self.uniform_reg(op["in"])
        out, fo = self._ireg(op["out"], n)
        sm, _ = self.state(op["state_sum"], "q", forced=fi)
        cnt, _ = self.state(op["state_count"], "q", forced=0)
        self.emit(K.OP_RMEAN, xin, out, n, sm, cnt, fi - fo, summary=f"running_mean {n} Q{fi} -> Q{fo} (int64 sum, count)")

    def _softmax(self, op):
        n = self.reg_len[op["out"]]
        xin, fi = self.uniform_reg(op["in"])
        out, _ = self._ireg(op["out"], n, forced=K.Q15)
        self.emit(K.OP_SOFTMAX, xin, out, n, fi, summary=f"softmax {n} Q{fi} -> Q15")

    def _affine(self, op):
        scale = np.asarray(self.weights[op["scale"]], np.float64)
        shift = np.asarray(self.weights[op["shift"]], np.float64)
        n = scale.size
        xin, fi = self.int_reg(op["in"])
        out, fo = self._ireg(op["out"], n)
        s = np.where(scale != 0, np.abs(scale) / 127.0, 1.0 / 127.0)
        wq = np.round(scale / s).astype(np.int8)
        bq = np.round(shift / (s * 2.0 ** -fi)).astype(np.int64)
        mul, sh = self.requant_table(s, fi, fo)
        self.emit(K.OP_AFFINE, xin, out, n, self.const("W8", wq), self.w32(bq), mul, sh,
                  summary=f"affine {n} {qname(fi)} -> Q{fo}")

    def cell(self, op, gates):
        """A recurrent cell's input weights [gates·H, I], recurrent weights [gates·H, H], I, H, and
        its input register."""
        w_ih, w_hh = (np.asarray(self.weights[op[k]], np.float64) for k in ("w_ih", "w_hh"))
        return (w_ih, w_hh, w_ih.shape[1], w_ih.shape[0] // gates, *self.uniform_reg(op["in"]))

    def _lstm(self, op):
        w_ih, w_hh, I, H, xin, fi = self.cell(op, 4)
        wq, s = row_scales(np.concatenate([w_ih, w_hh], axis=1))
        bq = np.round(np.asarray(self.weights[op["bias"]], np.float64) / (s * 2.0 ** -fi)).astype(np.int64)
        self.check_acc(wq[:, :I], bq, f"lstm {op['w_ih']}")
        self.check_acc(wq[:, I:], 0, f"lstm {op['w_hh']}")
        mx, sx = self.requant_table(s, fi, K.Q12)
        mh, shh = self.requant_table(s, K.Q15, K.Q12)
        h, _ = self.state(op["state_h"], "q", forced=K.Q15)
        c, fc = self.state(op["state_c"], "q")
        if not self.cal and fc < K.Q12:
            raise ValueError(f"lstm cell state {op['state_c']}: Q{fc} has fewer than 12 fractional bits")
        out, _ = self._ireg(op["out"], H, forced=K.Q15)
        tmp = self.scratch(4 * H)
        self.emit(K.OP_LSTM, xin, out, I, H, self.const("W8", wq), self.w32(bq), mx, sx, mh, shh, h, c, fc,
                  self.slim(), tmp, summary=f"lstm H={H} I={I} Q{fi}, h Q15, c Q{fc}")

    def _gru(self, op):
        w_ih, w_hh, I, H, xin, fi = self.cell(op, 3)
        h, _ = self.state(op["state_h"], "q", forced=K.Q15)
        parts = []
        for w, b, f in ((w_ih, op["b_ih"], fi), (w_hh, op["b_hh"], K.Q15)):
            wq, s = row_scales(w)
            bq = np.round(np.asarray(self.weights[b], np.float64) / (s * 2.0 ** -f)).astype(np.int64)
            self.check_acc(wq, bq, f"gru {b}")
            parts += [self.const("W8", wq), self.w32(bq), *self.requant_table(s, f, K.Q12)]
        out, _ = self._ireg(op["out"], H, forced=K.Q15)
        self.emit(K.OP_GRU, xin, out, I, H, *parts, h, self.scratch(6 * H), summary=f"gru H={H} I={I} Q{fi}, h Q15")

    def _lmu_memory(self, op):
        A = np.asarray(self.weights[op["a"]], np.float64)
        B = np.asarray(self.weights[op["b"]], np.float64).ravel()
        d = A.shape[0]
        ch = self.reg_len[op["in"]]
        u, fu = self.uniform_reg(op["in"])
        lim = 2 ** (self.a_bits - 1) - 1
        fa = frac_bits(np.abs(A).max(), lim, 1.0, lo=0, hi=30)
        fb = frac_bits(np.abs(B).max(), lim, 1.0, lo=0, hi=30)
        m, fm = self.state(op["state_m"], "q")
        out, fo = self._ireg(op["out"], ch * d)
        tmp = self.scratch(d)
        self.emit(K.OP_LMUMEM, u, out, ch, d, self.const("W16", np.round(A * 2.0 ** fa)), fa,
                  self.const("W16", np.round(B * 2.0 ** fb)), fu + fb - fm, m, self.slim(), fm - fo, tmp,
                  summary=f"lmu_memory ch={ch} d={d} A Q{fa} ({self.a_bits} bit), m Q{fm} ({self.state_bits} bit)")

    def number_or_weight(self, value, n):
        """A field that is a number or the name of a weight vector, as float64 [n]."""
        v = self.weights[value] if isinstance(value, str) else value
        return np.broadcast_to(np.asarray(v, np.float64).ravel(), (n,))

    def _lif(self, op):
        n = self.reg_len[op["out"]]
        tau = self.number_or_weight(op["tau"], n)
        thr = self.number_or_weight(op["threshold"], n)
        xin, fi = self.uniform_reg(op["in"])
        v, fv = self.state(op["state_v"], "q")
        out, _ = self._ireg(op["out"], n, forced=0)
        self.spikes.add(op["out"])
        k = self.w32(np.round(2.0 ** K.Q15 / tau))
        self.emit(K.OP_LIF, xin, out, n, v, k, self.w32(np.round(thr * 2.0 ** fv)), fi - fv, self.slim(),
                  summary=f"lif {n} Q{fi}, v Q{fv}")

    def plan(self) -> Plan:
        def cat(kind, dtype):
            return np.concatenate(self.chunks[kind]).astype(dtype) if self.chunks[kind] else np.zeros(0, dtype)
        order = sorted(self.states.values(), key=lambda s: s[0])
        names = sorted(self.states, key=lambda n: self.states[n][0])
        init = np.concatenate([self.init[n] for n in names]) if names else np.zeros(0, np.float32)
        assert all(a[0] + a[1] == b[0] for a, b in zip(order, order[1:]))
        return Plan(np.array(self.rec, np.int64).reshape(-1, K.REC), cat("W8", np.int8), cat("W16", np.int16),
                    cat("W32", np.int32), cat("WF", np.float32), max(self.wsi, 1), max(self.wsf, 1),
                    init.astype(np.float32), self.x_off, self.y_off, self.reg_len["x"],
                    self.reg_len[self.meta["program"]["output"]], self.qmax, dict(self.formats),
                    {k: (v[1], self.reg_len.get(k.split("@")[0], 0)) for k, v in self.regs.items() if v[0] == "q"},
                    {k: (v[0], v[1]) for k, v in self.states.items() if v[2] is not None}, list(self.ops))


def run_plan(plan: Plan, X: np.ndarray, state: np.ndarray, peaks=None) -> np.ndarray:
    """X [T, streams, C] float32 (normalised as the model sees it) -> Y [T, streams, O]."""
    Y = np.empty((X.shape[0], X.shape[1], plan.O), np.float32)
    pw, ps = peaks if peaks is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    K.run(plan.rec, plan.W8, plan.W16, plan.W32, plan.WF, np.zeros(plan.wsi_size, np.int32),
          np.zeros(plan.wsf_size, np.float32), state, np.ascontiguousarray(X, np.float32), Y, plan.x_off,
          plan.y_off, plan.qmax, pw, ps)
    return Y


def tracked(plan: Plan, X: np.ndarray):
    """Run X [T, C] from the initial state: (peak per workspace row, peak per state word)."""
    state = np.tile(plan.state_init, (1, 1))
    peaks = (np.zeros(plan.wsi_size, np.int64), np.zeros(state.shape[1], np.int64))
    run_plan(plan, X[:, None, :], state, peaks)
    return peaks


def calibrate(meta: dict, weights: dict, X: np.ndarray, state_bits: int = 32, a_bits: int = 16) -> Plan:
    """Lower with wide formats, run X [T, C] (normalised), and lower again with the formats that
    the peaks allow."""
    wide = _Lowering(meta, weights, {}, True, state_bits, a_bits).plan()
    peaks = tracked(wide, X)
    formats = {}
    for name, (off, n) in wide.int_regs.items():
        if name not in wide.formats:   # a concat: its parts' formats
            continue
        f = wide.formats[name]
        formats[name] = frac_bits(peaks[0][off:off + n].max(initial=0) / 2.0 ** f, QMAX, HEADROOM)
    for name, (off, n) in wide.int_states.items():
        peak = peaks[1][off:off + n].max(initial=0) / 2.0 ** CAL_STATE_F
        formats["state:" + name] = frac_bits(peak, 2 ** (state_bits - 1) - 1, STATE_HEADROOM, lo=0, hi=30)
    return _Lowering(meta, weights, formats, False, state_bits, a_bits).plan()


class IntExecutor:
    """The integer plan behind edge.runtime.Model's executor interface. The state is a float32
    array [streams, words] whose words hold int32 bits for the integer states."""

    name = "int8"
    state_holds_bits = True       # int32 bit patterns may read as NaN: the runtime's state guard skips it

    def __init__(self, plan: Plan):
        self.plan = plan
        self.input_size, self.output_size, self.state_size = plan.C, plan.O, plan.state_init.size

    def init_state(self, streams: int = 1) -> np.ndarray:
        return np.tile(self.plan.state_init, (streams, 1))

    def block(self, x, state) -> np.ndarray:
        return run_plan(self.plan, x, state)

    def step(self, x, state) -> np.ndarray:
        return run_plan(self.plan, x[None], state)[0]


def normalised(meta: dict, x: np.ndarray) -> np.ndarray:
    norm = meta.get("normalisation") or {}
    x = np.asarray(x, np.float32)
    if "mean" in norm:
        x = (x - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    return np.ascontiguousarray(x)


def training_inputs(meta: dict, samples: int) -> np.ndarray | None:
    """Raw inputs [T, C] from the data a shipped bundle was trained on, never its held-out part:
    the BROAD training trials (attitude), the watch recordings of the subjects the bundle trained
    on (its metrics name the held-out ones), the ETT train split (its config names the set); or
    None when the metadata names none of these."""
    from edge.io.channels import select_inputs
    config, metrics = (meta.get("model") or {}).get("config") or {}, meta.get("metrics") or {}
    if meta["task"] == "attitude":
        from edge.io.recordings import read_recording
        from edge.io.datasets import broad_trials
        trials = broad_trials(split="train")
        picks = trials[::max(1, len(trials) // 4)][:4]
        x = np.concatenate([select_inputs(read_recording(p), meta, "calibration")[:samples // len(picks)]
                            for p in picks])
    elif metrics.get("dataset") == "watch" and metrics.get("held_out_subjects"):
        from edge.tasks.classify.data import load_watch
        data = load_watch()
        x = np.concatenate([r for r, s in zip(data.x, data.subject) if s not in metrics["held_out_subjects"]])
        x = x[::max(1, len(x) // samples)]
    elif str(config.get("dataset", "")).startswith("ETT") and "setting" in config:
        from edge.tasks.forecast.ett import load_ett
        ett = load_ett(config["dataset"], config["setting"])
        x = ett.values[slice(*ett.borders["train"])]
    else:
        return None
    return np.asarray(x, np.float32)


def calibration_inputs(bundle, recording=None, samples: int = 60_000, fallback=None) -> np.ndarray:
    """Raw inputs [T, C] to calibrate on, up to ``samples``: the given recording (a file or an
    array), else the bundle's training data (training_inputs), else the ``fallback`` recording."""
    label = bundle.meta.get("name") or bundle.path
    x = None if recording is not None else training_inputs(bundle.meta, samples)
    if x is None:
        recording = recording if recording is not None else fallback
        if recording is None:
            raise ValueError(f"bundle {label}: give a calibration recording (its metadata names no training "
                             "data this runtime can read)")
        if isinstance(recording, np.ndarray):           # raw inputs [T, C] already
            x = np.asarray(recording, np.float32)
        else:
            from edge.io.recordings import read_recording
            from edge.io.channels import select_inputs
            x = select_inputs(read_recording(recording, channels=[c["name"] for c in bundle.meta["inputs"]]),
                              bundle.meta, label)
    return np.ascontiguousarray(x[np.all(np.isfinite(x), axis=1)][:samples])


def load_int8(bundle_or_name, recording=None, state_bits: int = 32, a_bits: int = 16, fallback=None):
    """An edge.runtime.Model that runs the bundle in integers, calibrated by calibration_inputs
    (``recording``, else the bundle's training data, else ``fallback``)."""
    from edge.bundle import BundleError, read_bundle
    from edge.io.recordings import RecordingError
    from edge.runtime import InputError, Model
    bundle = read_bundle(bundle_or_name)
    try:
        check_program(bundle.meta["program"])
        x = calibration_inputs(bundle, recording, fallback=fallback)
        plan = calibrate(bundle.meta, bundle.weights, normalised(bundle.meta, x), state_bits, a_bits)
    except (RecordingError, InputError):  # the calibration file's own problem: its line says so
        raise
    except ValueError as e:  # UnsupportedInt, formats that do not fit, no calibration data
        raise BundleError(bundle.path, f"cannot run in integers: {e}") from None
    return Model(bundle, IntExecutor(plan), f"int8: integer reference, {len(plan.ops)} ops, calibrated")
