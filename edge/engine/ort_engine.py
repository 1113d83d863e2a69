"""The onnxruntime executor: runs any bundle's step graph, many streams per call.

One session, single-threaded by default (streams are the parallelism the caller controls), with
IOBinding over preallocated buffers: per stream count it keeps two bindings that ping-pong the
state buffers, so a call allocates nothing and a block of T steps copies state only at its ends.

Threads: one executor may be shared by threads, each advancing its own state arrays. The session
runs concurrent calls (onnxruntime's `run` is thread-safe); the bound buffers are per thread (a
``threading.local``), so no two threads ever write the same buffer.
"""
import math
import threading

import numpy as np
import onnxruntime as ort

from edge.bundle import state_input, state_output


class OrtExecutor:
    name = "onnxruntime"

    def __init__(self, model, state_spec: list, threads: int = 1):
        """model: the ONNX bytes or a path; state_spec: the bundle's metadata `state` list."""
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.input_size = int(shapes["x"][1])
        self.output_size = int(self.session.get_outputs()[0].shape[1])
        self.state_layout, offset = [], 0
        for spec in state_spec:
            shape = tuple(int(s) for s in spec["shape"])
            self.state_layout.append((spec["name"], offset, shape))
            offset += math.prod(shape)
        self.state_size = offset
        self._init_row = np.concatenate(
            [np.full(math.prod(shape), float(spec.get("init", 0.0)), np.float32)
             for spec, (_, _, shape) in zip(state_spec, self.state_layout)] or [np.zeros(0, np.float32)])
        self._local = threading.local()  # .buffers: this thread's bindings, per stream count

    def init_state(self, streams: int) -> np.ndarray:
        return np.tile(self._init_row, (streams, 1))

    def _bind(self, streams: int):
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        if streams in buffers:
            return buffers[streams]
        x = np.zeros((streams, self.input_size), np.float32)
        y = np.zeros((streams, self.output_size), np.float32)
        ping = [np.zeros((streams, *shape), np.float32) for _, _, shape in self.state_layout]
        pong = [np.zeros_like(a) for a in ping]

        def binding(src, dst):
            io = self.session.io_binding()
            io.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
            io.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
            for (name, _, _), a, b in zip(self.state_layout, src, dst):
                io.bind_input(state_input(name), "cpu", 0, np.float32, a.shape, a.ctypes.data)
                io.bind_output(state_output(name), "cpu", 0, np.float32, b.shape, b.ctypes.data)
            return io

        bound = (x, y, (ping, pong), (binding(ping, pong), binding(pong, ping)))
        if len(buffers) >= 8:  # a bounded cache of stream counts
            buffers.pop(next(iter(buffers)))
        buffers[streams] = bound
        return bound

    def _load(self, state, bufs):
        for (_, off, shape), buf in zip(self.state_layout, bufs):
            buf.reshape(len(state), -1)[:] = state[:, off:off + math.prod(shape)]

    def _store(self, bufs, state):
        for (_, off, shape), buf in zip(self.state_layout, bufs):
            state[:, off:off + math.prod(shape)] = buf.reshape(len(state), -1)

    def block(self, x: np.ndarray, state: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x (T, S, C) -> y (T, S, O); state (S, state_size) advanced in place."""
        T, S, _ = x.shape
        xb, yb, (ping, pong), (forward, backward) = self._bind(S)
        y = np.empty((T, S, self.output_size), np.float32) if out is None else out
        self._load(state, ping)
        for t in range(T):
            xb[:] = x[t]
            self.session.run_with_iobinding(forward if t % 2 == 0 else backward)
            y[t] = yb
        self._store(pong if T % 2 else ping, state)
        return y

    def step(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        """x (S, C) -> y (S, O), a buffer reused by this thread's next call; state advanced in place."""
        S = x.shape[0]
        xb, yb, (ping, pong), (forward, _) = self._bind(S)
        self._load(state, ping)
        xb[:] = x
        self.session.run_with_iobinding(forward)
        self._store(pong, state)
        return yb
