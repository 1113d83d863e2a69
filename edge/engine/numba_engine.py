"""The Numba executor of bundle step programs (docs/bundle.md, "The step program").

The program is lowered once, at construction, to int64 micro-op records over one float32
workspace (see :mod:`edge.engine.kernels`); every weight is copied into one flat float32 array
(matrices transposed, input-major). :meth:`NumbaExecutor.step` and :meth:`NumbaExecutor.block`
are both one call of the same compiled interpreter (``step`` is ``block`` with T = 1): the whole
T x streams x ops loop runs inside it, with no Python per sample.

    ex = NumbaExecutor(program, weights, state_spec)
    state = ex.init_state(streams)                # float32 [streams, state_size]
    y = ex.step(x, state)                         # x [streams, C] -> y [streams, O]; state in place
    y = ex.block(xs, state)                       # xs [T, streams, C] -> y [T, streams, O]

The returned ``y`` is owned by the executor and reused by the calling thread's next call with the
same shape (no allocation per call): copy it (or pass ``out=``) to keep it.

Threads: one executor may be shared by any number of threads, each advancing its own state
arrays. The compiled runner releases the GIL, so the threads compute in parallel; each thread
gets its own workspace and its own output buffers (a ``threading.local``, made on the thread's
first call), and the program and weights are only read. Two threads must not advance the same
state array at the same time (that is the caller's data, as with any numpy array).
bench/engine_threads.py measured this against one lock around the runner.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from edge.engine import kernels as K

__all__ = ["NumbaExecutor", "UnsupportedOp"]

_F32 = np.dtype(np.float32)
_ALIGN = 16  # weights and workspace regions start on 64-byte boundaries (16 floats)
WORKSPACE_BYTES = 1 << 20  # cap on the chunk workspace (rows x lanes x 4 B); lanes shrink to fit
_OUT_CACHE = 16  # output arrays kept per call kind (one per shape); more shapes start it afresh

SUPPORTED_OPS = ("dense", "affine", "act", "add", "concat", "glu", "l2norm", "lstm", "gru",
                 "lmu_memory", "recurrent_lmu", "s4d", "lif", "conv", "running_mean", "attitude_filter",
                 "tilt_correct", "softmax")
ACTIVATIONS = tuple(K.ACT_CODES)
# attitude_filter: its scalar constants (op fields, numbers) and its state fields with their sizes
ATTITUDE_CONSTANTS = ("dt", "b0", "b1", "b2", "a1", "a2", "k_rest", "k_bias_rest", "rest_gyr", "rest_acc",
                      "rest_time", "k_bias")
ATTITUDE_STATE = (("state_q", 4), ("state_bias", 3), ("state_x1", 3), ("state_x2", 3), ("state_y1", 3),
                  ("state_y2", 3), ("state_gyr_lp", 3), ("state_acc_lp", 3), ("state_rest", 1),
                  ("state_started", 1))


class UnsupportedOp(ValueError):
    """The program uses an op (or an activation) that the Numba engine has no kernel for."""


class ProgramError(ValueError):
    """The program, its weights or its state spec are inconsistent."""


def _size(shape) -> int:
    return int(math.prod(int(s) for s in shape))


class _Builder:
    """Lowers the program to micro-op records, lays out rows, and packs the weights."""

    def __init__(self, program: dict, weights: dict, state_spec: list, fast_math: bool):
        if not isinstance(program, dict):
            raise ProgramError(f"program must be a dict, got {type(program).__name__}")
        for key in ("registers", "output", "ops"):
            if key not in program:
                raise ProgramError(f"program has no {key!r}")
        self.weights_in = weights
        self.fast_math = fast_math
        self.rows = 0
        self.records: list[list[int]] = []
        self.wchunks: list[np.ndarray] = []
        self.wsize = 0
        self._wcache: dict = {}

        # registers
        regs = program["registers"]
        if not isinstance(regs, dict) or "x" not in regs:
            raise ProgramError("program.registers must map names to lengths and include 'x'")
        self.reg_len = {}
        for name, n in regs.items():
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
                raise ProgramError(f"register {name!r}: length must be a non-negative integer, got {n!r}")
            self.reg_len[name] = int(n)
        ops = program["ops"]
        if not isinstance(ops, list):
            raise ProgramError("program.ops must be a list")
        for i, op in enumerate(ops):  # unknown ops first: that is what engine='auto' needs to know
            name = op.get("op") if isinstance(op, dict) else None
            if name not in SUPPORTED_OPS:
                raise UnsupportedOp(f"op {i}: {name!r} has no Numba kernel "
                                    f"(supported: {', '.join(SUPPORTED_OPS)})")
            if "act" in op and op["act"] is not None and op["act"] not in ACTIVATIONS:
                raise UnsupportedOp(f"op {i} ({name}): activation {op['act']!r} has no Numba kernel "
                                    f"(supported: {', '.join(ACTIVATIONS)})")
        self.reg_row = self._place_registers(ops)
        if program["output"] not in self.reg_len:
            raise ProgramError(f"program.output {program['output']!r} is not a register")
        self.output = program["output"]

        # state: one region of rows, in state_spec order, each entry C-order flattened
        self.state_layout = []
        self.state_info = {}
        off = 0
        for i, spec in enumerate(state_spec):
            try:
                name, shape = spec["name"], tuple(int(s) for s in spec["shape"])
            except (KeyError, TypeError, ValueError) as e:
                raise ProgramError(f"state[{i}]: needs 'name' and an integer 'shape' ({e})") from None
            if name in self.state_info:
                raise ProgramError(f"state {name!r} is listed twice")
            n = _size(shape)
            self.state_info[name] = (off, shape, n)
            self.state_layout.append((name, off, shape))
            off += n
        self.state_size = off
        self.state_base = self._alloc(self.state_size)
        self._state_used: dict[str, str] = {}  # state name -> the op that uses it

        self._check_dataflow(ops)
        self.exact_ops = self._exact_ops(ops)
        for i, op in enumerate(ops):
            self.where = f"op {i} ({op['op']})"
            getattr(self, "_op_" + op["op"])(op, i in self.exact_ops)

        self.x_row = self.reg_row["x"]
        self.y_row = self.reg_row[self.output]

    # ---- helpers ----------------------------------------------------------------------------
    def _place_registers(self, ops) -> dict:
        """Rows of every register. A concat input that is assigned once, before the concat, and
        used by no other concat is placed inside the concat's output, so the concat copies
        nothing (an LMU's [m; x] costs no copy). Everything else gets its own aligned rows."""
        writers: dict = {}
        for i, op in enumerate(ops):
            for n in self._outputs(op):
                writers.setdefault(n, []).append(i)
        parent: dict = {}   # register -> (concat output register, row offset inside it)
        for i, op in enumerate(ops):
            ins, dst = op.get("ins"), op.get("out")
            if op["op"] != "concat" or not isinstance(ins, list) or dst not in self.reg_len \
                    or writers.get(dst) != [i] or dst in ins \
                    or any(not isinstance(n, str) or n not in self.reg_len for n in ins) \
                    or sum(self.reg_len[n] for n in ins) != self.reg_len[dst]:
                continue
            off = 0
            for n in ins:
                w = writers.get(n, [])
                once = (n == "x" and not w) or (n != "x" and len(w) == 1 and w[0] < i)
                if once and n not in parent and ins.count(n) == 1:
                    parent[n] = (dst, off)
                off += self.reg_len[n]
        rows: dict = {}

        def place(n):
            if n not in rows:
                if n in parent:
                    p, off = parent[n]
                    rows[n] = place(p) + off
                else:
                    rows[n] = self._alloc(self.reg_len[n])
            return rows[n]

        for n in self.reg_len:
            place(n)
        return rows

    def _alloc(self, n: int) -> int:
        """Rows for a vector of n floats, starting on a 64-byte boundary (unaligned vector
        loads that straddle cache lines cost up to 2x in the per-stream layout)."""
        r = -(-self.rows // _ALIGN) * _ALIGN
        self.rows = r + n
        return r

    def _err(self, msg: str):
        raise ProgramError(f"{self.where}: {msg}")

    def _field(self, op, key, allow_none=False):
        if key not in op:
            self._err(f"missing field {key!r}")
        v = op[key]
        if v is None and not allow_none:
            self._err(f"field {key!r} must not be null")
        return v

    def _reg(self, op, key, length=None):
        name = self._field(op, key)
        if name not in self.reg_len:
            self._err(f"{key}: {name!r} is not a declared register")
        if length is not None and self.reg_len[name] != length:
            self._err(f"{key}: register {name!r} has length {self.reg_len[name]}, expected {length}")
        return name

    def _weight(self, op, key, shape=None, allow_none=False):
        name = self._field(op, key, allow_none)
        if name is None:
            return None
        if not isinstance(name, str) or name not in self.weights_in:
            self._err(f"{key}: weight {name!r} is not among the initializers")
        w = np.asarray(self.weights_in[name], dtype=np.float32)
        if shape is not None and w.shape != tuple(shape):
            if not (w.size == _size(shape) and len(shape) == 1):  # [N] stored as [1, N] etc.
                self._err(f"{key}: weight {name!r} has shape {list(w.shape)}, expected {list(shape)}")
            w = w.reshape(shape)
        return w

    def _state(self, op, key, size):
        name = self._field(op, key)
        if name not in self.state_info:
            self._err(f"{key}: {name!r} is not in the state spec")
        if name in self._state_used:
            self._err(f"{key}: state {name!r} is already used by op {self._state_used[name]}")
        self._state_used[name] = self.where
        off, shape, n = self.state_info[name]
        if n != size:
            self._err(f"{key}: state {name!r} has shape {list(shape)} ({n} floats), expected {size}")
        return name, self.state_base + off

    def _put(self, arr: np.ndarray) -> int:
        """Append a float32 array to the flat weight buffer (aligned); returns its offset."""
        a = np.ascontiguousarray(arr, dtype=np.float32).ravel()
        key = (a.shape, a.tobytes())
        if key in self._wcache:
            return self._wcache[key]
        off = self.wsize
        pad = (-a.size) % _ALIGN
        self.wchunks.append(a)
        if pad:
            self.wchunks.append(np.zeros(pad, np.float32))
        self.wsize += a.size + pad
        self._wcache[key] = off
        return off

    def _emit(self, *fields):
        rec = [int(f) for f in fields]
        if len(rec) > K.REC:
            raise AssertionError("record too long")
        self.records.append(rec + [0] * (K.REC - len(rec)))

    def _act(self, op, exact):
        code = K.ACT_CODES[op.get("act", "identity") or "identity"]
        if exact and code in (K.ACT_TANH, K.ACT_SIGMOID, K.ACT_GELU):
            code += K.EXACT_OFFSET
        return code

    def _out_row(self, out_name, in_names, same_ok=False):
        """Row where an op writes out_name: its own rows, or a temporary (copied over by
        _finish) when they overlap an input's rows: always for matrix kernels, and for an
        element-wise op (same_ok) unless the overlap is exact."""
        r, n = self.reg_row[out_name], self.reg_len[out_name]
        for name in in_names:
            a, m = self.reg_row[name], self.reg_len[name]
            if n and m and a < r + n and r < a + m and not (same_ok and a == r and m == n):
                return self._alloc(n), True
        return r, False

    def _finish(self, out_name, row, temp):
        if temp:
            self._emit(K.OP_COPY, self.reg_row[out_name], row, self.reg_len[out_name])

    def _scalar_or_vec(self, op, key, n):
        v = self._field(op, key)
        if isinstance(v, str):
            w = self._weight(op, key)
            if w.size == 1:
                return np.full(n, w.reshape(()), np.float32)
            if w.size != n:
                self._err(f"{key}: weight {v!r} has {w.size} values, expected 1 or {n}")
            return w.reshape(n)
        if isinstance(v, (list, tuple)):
            a = np.asarray(v, np.float32)
            if a.size not in (1, n):
                self._err(f"{key}: {a.size} values, expected 1 or {n}")
            return np.broadcast_to(a.reshape(-1), (n,)).copy() if a.size == 1 else a.reshape(n)
        try:
            return np.full(n, np.float32(v), np.float32)
        except (TypeError, ValueError):
            self._err(f"{key}: expected a number, a list or an initializer name, got {v!r}")

    @staticmethod
    def _inputs(op):
        if op["op"] == "concat":
            ins = op.get("ins")
            return list(ins) if isinstance(ins, list) else []
        if op["op"] == "add":
            return [op.get("a"), op.get("b")]
        if op["op"] == "tilt_correct":
            return [op.get("q"), op.get("r")]
        return [op.get("in")]

    @staticmethod
    def _outputs(op):
        """The registers an op writes (named by strings; the op's own checks refuse the rest)."""
        outs = [op.get("out")] + ([op.get("gravity")] if op["op"] == "attitude_filter" else [])
        return [n for n in outs if isinstance(n, str)]

    def _check_dataflow(self, ops):
        """Every register an op reads must have been written earlier in the same step (or be x):
        registers carry nothing from one step or stream to the next; state does."""
        written = {"x"}
        for i, op in enumerate(ops):
            for n in self._inputs(op):
                if isinstance(n, str) and n in self.reg_len and n not in written:
                    raise ProgramError(f"op {i} ({op['op']}): reads register {n!r} before any op writes it")
            written.update(self._outputs(op))
        if self.output not in written:
            raise ProgramError(f"program.output {self.output!r} is never written")

    # which ops can reach a LIF input (their transcendentals must be the exact libm forms)
    def _exact_ops(self, ops):
        if not self.fast_math:
            return set(range(len(ops)))

        ins = self._inputs

        critical = {op.get("in") for op in ops if op["op"] == "lif" and isinstance(op.get("in"), str)}
        exact: set[int] = set()
        changed = True
        while changed:
            changed = False
            for i in range(len(ops) - 1, -1, -1):
                op = ops[i]
                if op["op"] != "lif" and i not in exact and any(n in critical for n in self._outputs(op)):
                    exact.add(i)
                    critical.update(n for n in ins(op) if isinstance(n, str))
                    changed = True
        return exact

    # ---- ops --------------------------------------------------------------------------------
    def _op_dense(self, op, exact):
        src = self._reg(op, "in")
        dst = self._reg(op, "out")
        I, O = self.reg_len[src], self.reg_len[dst]
        w = self._weight(op, "weight", (O, I))
        b = self._weight(op, "bias", (O,), allow_none=True)
        row, temp = self._out_row(dst, [src])
        self._emit(K.OP_DENSE, self.reg_row[src], row, I, O, self._put(w.T),
                   -1 if b is None else self._put(b), self._act(op, exact))
        self._finish(dst, row, temp)

    def _op_affine(self, op, exact):
        src = self._reg(op, "in")
        n = self.reg_len[src]
        dst = self._reg(op, "out", n)
        sc = self._weight(op, "scale", (n,))
        sh = self._weight(op, "shift", (n,))
        row, temp = self._out_row(dst, [src], same_ok=True)
        self._emit(K.OP_AFFINE, self.reg_row[src], row, n, self._put(sc), self._put(sh))
        self._finish(dst, row, temp)

    def _op_act(self, op, exact):
        src = self._reg(op, "in")
        n = self.reg_len[src]
        dst = self._reg(op, "out", n)
        self._field(op, "act")
        row, temp = self._out_row(dst, [src], same_ok=True)
        self._emit(K.OP_ACT, self.reg_row[src], row, n, self._act(op, exact))
        self._finish(dst, row, temp)

    def _op_add(self, op, exact):
        a = self._reg(op, "a")
        n = self.reg_len[a]
        b = self._reg(op, "b", n)
        dst = self._reg(op, "out", n)
        row, temp = self._out_row(dst, [a, b], same_ok=True)
        self._emit(K.OP_ADD, self.reg_row[a], self.reg_row[b], row, n)
        self._finish(dst, row, temp)

    def _op_concat(self, op, exact):
        names = self._field(op, "ins")
        if not isinstance(names, list) or not names:
            self._err("ins must be a non-empty list of registers")
        for n in names:
            if n not in self.reg_len:
                self._err(f"ins: {n!r} is not a declared register")
        total = sum(self.reg_len[n] for n in names)
        dst = self._reg(op, "out", total)
        if dst in names and len(names) > 1:
            self._err(f"out {dst!r} cannot also be one of the concatenated inputs")
        row = self.reg_row[dst]
        for n in names:
            if self.reg_row[n] != row and self.reg_len[n]:  # not placed inside dst already
                self._emit(K.OP_COPY, row, self.reg_row[n], self.reg_len[n])
            row += self.reg_len[n]

    def _op_glu(self, op, exact):
        src = self._reg(op, "in")
        if self.reg_len[src] % 2:
            self._err(f"in {src!r} has odd length {self.reg_len[src]}")
        n = self.reg_len[src] // 2
        dst = self._reg(op, "out", n)
        row, temp = self._out_row(dst, [src])
        self._emit(K.OP_GLU, self.reg_row[src], row, n, int(exact))
        self._finish(dst, row, temp)

    def _vector_op(self, op, code):
        """An op over one whole register (in, out, n) whose kernel may write in place (out == in)."""
        src = self._reg(op, "in")
        n = self.reg_len[src]
        dst = self._reg(op, "out", n)
        row, temp = self._out_row(dst, [src], same_ok=True)
        self._emit(code, self.reg_row[src], row, n)
        self._finish(dst, row, temp)

    def _op_l2norm(self, op, exact):
        self._vector_op(op, K.OP_L2NORM)

    def _op_softmax(self, op, exact):
        self._vector_op(op, K.OP_SOFTMAX)

    def _op_lstm(self, op, exact):
        src = self._reg(op, "in")
        I = self.reg_len[src]
        w_hh = self._weight(op, "w_hh")
        if w_hh.ndim != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
            self._err(f"w_hh has shape {list(w_hh.shape)}, expected [4H, H]")
        H = w_hh.shape[1]
        w_ih = self._weight(op, "w_ih", (4 * H, I))
        b = self._weight(op, "bias", (4 * H,), allow_none=True)
        dst = self._reg(op, "out", H)
        _, h = self._state(op, "state_h", H)
        _, c = self._state(op, "state_c", H)
        cat = self._alloc(I + H)
        gates = self._alloc(4 * H)
        self._emit(K.OP_COPY, cat, self.reg_row[src], I)
        self._emit(K.OP_COPY, cat + I, h, H)
        wt = np.concatenate([w_ih, w_hh], 1).T          # [(I+H), 4H]
        self._emit(K.OP_DENSE, cat, gates, I + H, 4 * H, self._put(wt),
                   -1 if b is None else self._put(b), K.ACT_IDENTITY)
        self._emit(K.OP_LSTM, gates, c, h, self.reg_row[dst], H, int(exact))

    def _op_gru(self, op, exact):
        src = self._reg(op, "in")
        I = self.reg_len[src]
        w_hh = self._weight(op, "w_hh")
        if w_hh.ndim != 2 or w_hh.shape[0] != 3 * w_hh.shape[1]:
            self._err(f"w_hh has shape {list(w_hh.shape)}, expected [3H, H]")
        H = w_hh.shape[1]
        w_ih = self._weight(op, "w_ih", (3 * H, I))
        b_ih = self._weight(op, "b_ih", (3 * H,), allow_none=True)
        b_hh = self._weight(op, "b_hh", (3 * H,), allow_none=True)
        dst = self._reg(op, "out", H)
        _, h = self._state(op, "state_h", H)
        gi = self._alloc(3 * H)
        gh = self._alloc(3 * H)
        self._emit(K.OP_DENSE, self.reg_row[src], gi, I, 3 * H, self._put(w_ih.T),
                   -1 if b_ih is None else self._put(b_ih), K.ACT_IDENTITY)
        self._emit(K.OP_DENSE, h, gh, H, 3 * H, self._put(w_hh.T),
                   -1 if b_hh is None else self._put(b_hh), K.ACT_IDENTITY)
        self._emit(K.OP_GRU, gi, gh, h, self.reg_row[dst], H, int(exact))

    def _lmu_ab(self, op):
        a = self._weight(op, "a")
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            self._err(f"a has shape {list(a.shape)}, expected [d, d]")
        d = a.shape[0]
        b = self._weight(op, "b", (d,))
        return d, self._put(a.T), self._put(b)

    def _op_lmu_memory(self, op, exact):
        src = self._reg(op, "in")
        ch = self.reg_len[src]
        d, A, B = self._lmu_ab(op)
        dst = self._reg(op, "out", ch * d)
        _, m = self._state(op, "state_m", ch * d)
        row, temp = self._out_row(dst, [src])
        self._emit(K.OP_LMUMEM, self.reg_row[src], m, row, ch, d, A, B)
        self._emit(K.OP_COPY, m, row, ch * d)
        self._finish(dst, row, temp)

    def _op_recurrent_lmu(self, op, exact):
        src = self._reg(op, "in")
        I = self.reg_len[src]
        d, A, B = self._lmu_ab(op)
        enc = self._weight(op, "encoder")
        W = self._weight(op, "weight")
        if enc.ndim != 2 or W.ndim != 2:
            self._err("encoder and weight must be matrices")
        ch, H = enc.shape[0], W.shape[0]
        F = I + H + ch * d
        if enc.shape[1] != F or W.shape[1] != F:
            self._err(f"encoder {list(enc.shape)} and weight {list(W.shape)} must have I+H+ch*d = {F} columns")
        bias = self._weight(op, "bias", (H,), allow_none=True)
        dst = self._reg(op, "out", H)
        _, m = self._state(op, "state_m", ch * d)
        _, h = self._state(op, "state_h", H)
        cat = self._alloc(F)
        u = self._alloc(ch)
        mn = self._alloc(ch * d)
        self._emit(K.OP_COPY, cat, self.reg_row[src], I)
        self._emit(K.OP_COPY, cat + I, h, H)
        self._emit(K.OP_COPY, cat + I + H, m, ch * d)
        self._emit(K.OP_DENSE, cat, u, F, ch, self._put(enc.T), -1, K.ACT_IDENTITY)
        self._emit(K.OP_LMUMEM, u, m, mn, ch, d, A, B)
        self._emit(K.OP_COPY, m, mn, ch * d)
        self._emit(K.OP_COPY, cat + I + H, mn, ch * d)
        act = K.ACT_TANH_X if exact else K.ACT_TANH
        self._emit(K.OP_DENSE, cat, h, F, H, self._put(W.T), -1 if bias is None else self._put(bias), act)
        self._emit(K.OP_COPY, self.reg_row[dst], h, H)

    def _op_s4d(self, op, exact):
        src = self._reg(op, "in")
        H = self.reg_len[src]
        ar = self._weight(op, "ar")
        if ar.ndim != 2 or ar.shape[0] != H:
            self._err(f"ar has shape {list(ar.shape)}, expected [{H}, N]")
        N = ar.shape[1]
        parts = [ar] + [self._weight(op, k, (H, N)) for k in ("ai", "br", "bi", "cr", "ci")]
        dvec = self._weight(op, "d", (H,))
        dst = self._reg(op, "out", H)
        _, xr = self._state(op, "state_xr", H * N)
        _, xi = self._state(op, "state_xi", H * N)
        par = self._put(np.concatenate([p.ravel() for p in parts]))
        row, temp = self._out_row(dst, [src])
        self._emit(K.OP_S4D, self.reg_row[src], xr, xi, row, H, N, par, self._put(dvec), int(exact),
                   self._alloc(max(N, 4)))
        self._finish(dst, row, temp)

    def _op_lif(self, op, exact):
        src = self._reg(op, "in")
        n = self.reg_len[src]
        dst = self._reg(op, "out", n)
        _, v = self._state(op, "state_v", n)
        tau = self._scalar_or_vec(op, "tau", n)
        thr = self._scalar_or_vec(op, "threshold", n)
        if not np.all(np.isfinite(tau)) or np.any(tau == 0):
            self._err("tau must be finite and non-zero")
        row, temp = self._out_row(dst, [src], same_ok=True)
        self._emit(K.OP_LIF, self.reg_row[src], v, row, n, self._put(tau), self._put(thr))
        self._finish(dst, row, temp)

    def _op_conv(self, op, exact):
        src = self._reg(op, "in")
        I = self.reg_len[src]
        w = self._weight(op, "weight")
        if w.ndim != 3 or w.shape[1] != I or w.shape[2] < 1:
            self._err(f"weight has shape {list(w.shape)}, expected [O, {I}, k]")
        O, k = w.shape[0], w.shape[2]
        b = self._weight(op, "bias", (O,), allow_none=True)
        dst = self._reg(op, "out", O)
        cat = self._alloc(I * k)
        if k > 1:
            _, buf = self._state(op, "state_buf", I * (k - 1))
            # cat[i*k + j] = buf[i, j] (j < k-1), cat[i*k + k-1] = in[i]
            self._emit(K.OP_SCOPY, cat, buf, I, k - 1, k, k - 1)
        elif op.get("state_buf") is not None:
            self._state(op, "state_buf", 0)
        self._emit(K.OP_SCOPY, cat + k - 1, self.reg_row[src], I, 1, k, 1)
        self._emit(K.OP_DENSE, cat, self.reg_row[dst], I * k, O, self._put(w.reshape(O, I * k).T),
                   -1 if b is None else self._put(b), K.ACT_IDENTITY)
        if k > 1:  # buf = [buf, in][:, 1:]
            self._emit(K.OP_SCOPY, buf, cat + 1, I, k - 1, k - 1, k)

    def _op_running_mean(self, op, exact):
        src = self._reg(op, "in")
        n = self.reg_len[src]
        dst = self._reg(op, "out", n)
        self._exact_layout(op, "state_sum", n)
        _, sm = self._state(op, "state_sum", 2 * n)
        _, cnt = self._state(op, "state_count", 2)
        row, temp = self._out_row(dst, [src], same_ok=True)
        self._emit(K.OP_RMEAN, self.reg_row[src], sm, cnt, row, n)
        self._finish(dst, row, temp)

    def _exact_layout(self, op, key, n):
        """Bundles exported before the exact running mean keep its sum as [n] floats (a float32
        sum and count stop growing after 2^24 samples): say how to re-export them."""
        name = op.get(key)
        if name in self.state_info and self.state_info[name][2] == n:
            self._err(f"{key}: state {name!r} has the float32 layout [{n}] of an older export (its count "
                      "stops at 2^24 samples); re-export the bundle: python -m edge.export.relayout BUNDLE")

    def _op_attitude_filter(self, op, exact):
        """models/attitude.py attitude_filter_step; always exact (libm sin/cos/atan2, no fastmath)."""
        src = self._reg(op, "in", 6)
        dst = self._reg(op, "out", 4)
        grav = self._reg(op, "gravity", 3)  # (never out: their lengths differ)
        c = {}
        for key in ATTITUDE_CONSTANTS:
            v = self._field(op, key)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(v)):
                self._err(f"{key}: expected a finite number, got {v!r}")
            c[key] = float(v)
        # float32 as torch rounds a Python float for a float32 tensor; 3·rest_gyr in float64 first
        consts = np.array([c[k] for k in ATTITUDE_CONSTANTS] + [3.0 * c["rest_gyr"]], np.float32)
        rows = [self._state(op, key, n)[1] for key, n in ATTITUDE_STATE]
        self._emit(K.OP_ATTITUDE, self.reg_row[src], self.reg_row[dst], self.reg_row[grav], self._put(consts),
                   *rows)

    def _op_tilt_correct(self, op, exact):
        """models/attitude.py tilt_correct: out = normalise(q ⊗ exp(r))."""
        q = self._reg(op, "q", 4)
        r = self._reg(op, "r", 3)
        dst = self._reg(op, "out", 4)
        self._emit(K.OP_TILT, self.reg_row[q], self.reg_row[r], self.reg_row[dst])

    # ---- packing ----------------------------------------------------------------------------
    def pack(self):
        head = np.zeros(K.HEADER, np.int64)
        ops_off = K.HEADER
        head[K.H_NOPS] = len(self.records)
        head[K.H_ROWS] = self.rows
        head[K.H_SBASE] = self.state_base
        head[K.H_SSIZE] = self.state_size
        head[K.H_XROW] = self.reg_row["x"]
        head[K.H_C] = self.reg_len["x"]
        head[K.H_YROW] = self.reg_row[self.output]
        head[K.H_O] = self.reg_len[self.output]
        head[K.H_OPS] = ops_off
        wts = _aligned_zeros(self.wsize if self.wchunks else _ALIGN)
        if self.wchunks:
            wts[:] = np.concatenate(self.wchunks)
        head[K.H_WS0] = wts.size  # the runner checks the weights it is given against this
        recs = np.asarray(self.records, np.int64).reshape(-1) if self.records else np.zeros(0, np.int64)
        prog = np.concatenate([head, recs]).astype(np.int64)
        # lanes per chunk: as wide as MAX_LANES while the workspace stays within WORKSPACE_BYTES
        lanes = K.MAX_LANES
        while lanes > K.MIN_LANES and max(self.rows, 1) * lanes * 4 > WORKSPACE_BYTES:
            lanes //= 2
        prog[K.H_LANES] = lanes
        return prog, wts, max(self.rows, 1) * lanes


def _aligned_zeros(n: int) -> np.ndarray:
    """n float32 zeros starting on a 64-byte boundary (the rows' alignment is relative to it)."""
    raw = np.zeros(n + _ALIGN, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + n]


class _ThreadBuffers(threading.local):
    """What one thread's calls write: the workspace and the output buffers (one per shape)."""

    def __init__(self, workspace: int):
        self.ws = _aligned_zeros(workspace)
        self.y_step: dict = {}
        self.y_block: dict = {}


class NumbaExecutor:
    """Runs a bundle's step program with Numba kernels; many streams per call, whole blocks per call.

    ``fast_math=False`` uses the exact libm tanh/sigmoid/erf everywhere (slower); by default the
    vectorised rational forms are used except in ops whose output can reach a LIF input.
    """

    name = "numba"

    def __init__(self, program: dict, weights: dict, state_spec: list, *, fast_math: bool = True):
        b = _Builder(program, weights, list(state_spec), fast_math)
        self._prog, self._wts, workspace = b.pack()
        self._local = _ThreadBuffers(workspace)
        self.lanes = int(self._prog[K.H_LANES])  # streams per chunk in the widest chunk layout
        self._run = K.get_runner()
        self.input_size = b.reg_len["x"]
        self.output_size = b.reg_len[b.output]
        self.state_size = b.state_size
        self.state_layout = list(b.state_layout)
        self.exact_ops = sorted(b.exact_ops)
        self.micro_ops = len(b.records)
        self._init_row = np.zeros(self.state_size, np.float32)
        for spec, (name, off, shape) in zip(state_spec, self.state_layout):
            n = _size(shape)
            init = spec.get("init", 0.0)
            try:
                vals = np.broadcast_to(np.asarray(0.0 if init is None else init, np.float32), shape)
            except ValueError:
                raise ProgramError(f"state {name!r}: init does not fit shape {list(shape)}") from None
            self._init_row[off:off + n] = vals.reshape(n)

    def __repr__(self):
        return (f"NumbaExecutor(inputs={self.input_size}, outputs={self.output_size}, "
                f"state={self.state_size}, micro_ops={self.micro_ops})")

    def init_state(self, streams: int) -> np.ndarray:
        streams = int(streams)
        if streams < 0:
            raise ValueError(f"streams must be >= 0, got {streams}")
        return np.tile(self._init_row, (streams, 1))

    # ---- calls ----------------------------------------------------------------------------
    # The fast path does no checking in Python: the compiled runner accepts only C-contiguous
    # writable float32 arrays (a TypeError otherwise) and checks every shape itself (a non-zero
    # return code otherwise, before anything is touched).
    def _normalise(self, x, state, out, ndim, what):
        if not isinstance(state, np.ndarray) or state.dtype != _F32 or not state.flags.c_contiguous \
                or not state.flags.writeable or state.ndim != 2:
            raise TypeError(f"{what}: state must be a writeable C-contiguous float32 array [streams, "
                            f"{self.state_size}] (it is updated in place); make it with init_state()")
        if out is not None and (not isinstance(out, np.ndarray) or out.dtype != _F32
                                or not out.flags.c_contiguous or not out.flags.writeable):
            raise TypeError(f"{what}: out must be a writeable C-contiguous float32 array")
        x = np.array(x, dtype=np.float32, order="C", copy=None)
        if not x.flags.writeable:
            x = x.copy()
        if x.ndim != ndim:
            shape = "[T, streams, C]" if ndim == 3 else "[streams, C]"
            raise ValueError(f"{what}: x must be {shape} with C = {self.input_size}, got shape {x.shape}")
        return x

    def _fail(self, x, state, out, what):
        lead = (x.shape[0],) if what == "block" else ()
        streams = state.shape[0]
        if state.shape[1] != self.state_size:
            raise ValueError(f"{what}: state has shape {state.shape}, expected (streams, {self.state_size})")
        if x.shape[-1] != self.input_size or x.shape[-2] != streams:
            raise ValueError(f"{what}: x has shape {x.shape}, expected {lead + (streams, self.input_size)} "
                             f"(streams = state.shape[0] = {streams})")
        raise ValueError(f"{what}: out has shape {out.shape}, expected {lead + (streams, self.output_size)}")

    def step(self, x, state, out=None) -> np.ndarray:
        """Advance every stream by one sample: x [S, C] -> y [S, O]; ``state`` [S, state_size]
        (float32, C-contiguous) is updated in place. Without ``out`` the returned array belongs
        to the executor and is overwritten by the next ``step`` with the same S: copy it to keep
        it."""
        local = self._local
        try:
            if out is None:
                cache = local.y_step
                out = cache.get(x.shape[0])
                if out is None:
                    if len(cache) >= _OUT_CACHE:
                        cache.clear()
                    out = cache[x.shape[0]] = np.empty((x.shape[0], self.output_size), np.float32)
            code = self._run(self._prog, self._wts, local.ws, state, x, out, 1)
        except (TypeError, AttributeError, IndexError):
            x = self._normalise(x, state, out, 2, "step")
            if out is None:
                out = np.empty((x.shape[0], self.output_size), np.float32)
            if out.ndim != 2:
                raise ValueError(f"step: out must be [streams, {self.output_size}], got shape {out.shape}")
            code = self._run(self._prog, self._wts, local.ws, state, x, out, 1)
        if code:
            self._fail(x, state, out, "step")
        return out

    def block(self, x, state, out=None) -> np.ndarray:
        """Advance every stream by T samples: x [T, S, C] -> y [T, S, O]; state in place.
        Without ``out`` the returned array belongs to the executor and is overwritten by the next
        ``block`` with the same (T, S): copy it to keep it."""
        if type(x) is not np.ndarray or x.dtype is not _F32 or x.ndim != 3 or not x.flags.c_contiguous:
            x = self._normalise(x, state, out, 3, "block")
        T, S, C = x.shape
        local = self._local
        if out is None:
            cache = local.y_block
            pair = cache.get((T, S))
            if pair is None:
                if len(cache) >= _OUT_CACHE:
                    cache.clear()
                y3 = np.empty((T, S, self.output_size), np.float32)
                pair = cache[(T, S)] = (y3, y3.reshape(T * S, self.output_size))
            out, y2 = pair
        else:
            if not isinstance(out, np.ndarray) or out.dtype != _F32 or not out.flags.c_contiguous \
                    or not out.flags.writeable:
                raise TypeError("block: out must be a writeable C-contiguous float32 array")
            if out.shape != (T, S, self.output_size):
                raise ValueError(f"block: out must have shape {(T, S, self.output_size)}, got {out.shape}")
            y2 = out.reshape(T * S, self.output_size)
        try:
            code = self._run(self._prog, self._wts, local.ws, state, x.reshape(T * S, C), y2, T)
        except TypeError:  # a read-only x, or a bad state: normalise (or say precisely what is wrong)
            x = self._normalise(x, state, out, 3, "block")
            code = self._run(self._prog, self._wts, local.ws, state, x.reshape(T * S, C), y2, T)
        if code:
            self._fail(x, state, out, "block")
        return out
