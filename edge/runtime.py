"""`edge.load`: a bundle behind one small interface, on the Numba engine where it has a kernel for
every op, else on onnxruntime; and `Streams`, the same model over named streams with their state
kept in a `StateTable`.

Inputs are validated at this boundary: a wrong channel count, NaN or Inf, a value outside the
channel's valid range (`edge.validate.InputContract`), or an unknown stream id is refused with an
`InputError` that says what and where; the state is left untouched. After each call the state is
checked (one reduction): a stream whose state went non-finite is reset to the initial state, its
outputs from that sample on are recomputed from it, and the call reports a `StateReset`.
"""
import numpy as np

from edge.bundle import Bundle, BundleError, read_bundle
from edge.validate import InputContract, StateReset, nonfinite_rows, state_is_finite

ENGINES = ("auto", "numba", "onnxruntime")


class InputError(ValueError):
    pass


class Model:
    """A loaded bundle. `state` arrays are float32 [streams, state_size], advanced in place."""

    def __init__(self, bundle: Bundle, executor, reason: str):
        self.bundle, self.executor, self.reason = bundle, executor, reason
        self.meta = bundle.meta
        self.engine = executor.name
        self.input_size, self.output_size = bundle.input_size, bundle.output_size
        self.state_size = executor.state_size
        norm = self.meta.get("normalisation") or {}
        self._mean = np.asarray(norm["mean"], np.float32) if "mean" in norm else None
        self._std = np.asarray(norm["std"], np.float32) if "std" in norm else None
        self.contract = InputContract(self.meta)      # valid range per input channel
        self.state_resets = 0                         # streams reset by the state guard, all calls
        # an executor whose state words hold integer bits (the int8 reference) has no NaN to look for
        self._guarded = not getattr(executor, "state_holds_bits", False)

    def __repr__(self):
        return f"<edge.Model {self.meta.get('name') or self.bundle.path} on {self.engine}>"

    def init_state(self, streams: int = 1) -> np.ndarray:
        return self.executor.init_state(streams)

    def _check(self, x, state, axis_names):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(axis_names) or x.shape[-1] != self.input_size:
            raise InputError(f"input of shape {x.shape}: expected [{', '.join(axis_names[:-1])}, "
                             f"{self.input_size} channels ({', '.join(c['name'] for c in self.meta['inputs'])})]")
        if state.shape != (x.shape[-2], self.state_size) or state.dtype != np.float32:
            raise InputError(f"state of shape {state.shape} {state.dtype}: expected float32 "
                             f"[{x.shape[-2]} streams, {self.state_size}] (from init_state)")
        # a sum is NaN/Inf if any value is (or if finite values overflow): only then build the mask
        bad = None if np.isfinite(x.sum(dtype=np.float64)) else ~np.isfinite(x)
        if bad is not None and bad.any():
            where = np.argwhere(bad)[0]
            pos = ", ".join(f"{n} {i}" for n, i in zip(axis_names, where[:-1]))
            raise InputError(f"non-finite input ({float(x[tuple(where)])}) at {pos}, channel "
                             f"{self.meta['inputs'][where[-1]]['name']}; {int(bad.sum())} such values in the call")
        if not self.contract.all_fed(x):
            rejected = self.contract.screen(x, lambda idx: ", ".join(f"{n} {i}" for n, i in zip(axis_names, idx)))
            raise InputError(f"out_of_range input at {rejected.first['out_of_range']}; "
                             f"{rejected.counts['out_of_range']} such sample(s) in the call")
        if self._mean is not None:
            x = (x - self._mean) / self._std
        return np.ascontiguousarray(x)

    def step(self, x, state, resets: list | None = None) -> np.ndarray:
        """x [streams, C] -> y [streams, O] (a buffer reused by the next call: copy to keep).
        ``resets``: a list to which the state guard appends a `StateReset` per stream it reset."""
        x = self._check(x, state, ("stream", "channel"))
        y = self.executor.step(x, state)
        if not self._guarded or state_is_finite(state):
            return y
        return self._guard(x[None], state, y[None].copy(), resets)[0]

    def block(self, x, state, resets: list | None = None) -> np.ndarray:
        """x [T, streams, C] -> y [T, streams, O] in one call (``resets`` as in `step`)."""
        x = self._check(x, state, ("sample", "stream", "channel"))
        y = self.executor.block(x, state)
        if not self._guarded or state_is_finite(state):
            return y
        return self._guard(x, state, y.copy(), resets)

    def _guard(self, x, state, y, resets):
        """Streams whose state went non-finite: reset to the initial state at the first sample whose
        output was non-finite, and their outputs from there recomputed (x already normalised)."""
        for r in nonfinite_rows(state):
            bad = np.flatnonzero(~np.isfinite(y[:, r]).all(axis=-1))
            k = int(bad[0]) if len(bad) else len(x) - 1
            row = self.init_state(1)
            if len(bad):
                y[k:, r] = self.executor.block(np.ascontiguousarray(x[k:, r:r + 1]), row)[:, 0]
                if not state_is_finite(row):      # the inputs themselves drive it non-finite: start again
                    row = self.init_state(1)
            state[r] = row[0]
            self.state_resets += 1
            if resets is not None:
                resets.append(StateReset(stream=int(r), sample=k))
        return y


def load(bundle_or_name, engine: str = "auto", threads: int = 1) -> Model:
    """Load a bundle (a path, or the name of a shipped bundle) on the chosen engine.

    "auto" picks Numba when it has a kernel for every op of the program, else onnxruntime;
    `Model.reason` says which and why."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    bundle = read_bundle(bundle_or_name)
    meta = bundle.meta
    if engine == "numba" and meta.get("int8"):
        raise BundleError(bundle.path, "cannot run on numba: an int8 graph from onnxruntime quantisation runs on onnxruntime")
    if engine == "auto" and meta.get("int8"):
        reason = "onnxruntime: an int8 graph (onnxruntime quantisation)"
    elif engine in ("auto", "numba"):
        from edge.engine.numba_engine import NumbaExecutor, UnsupportedOp
        try:
            ex = NumbaExecutor(meta["program"], bundle.weights, meta["state"])
            return Model(bundle, ex, "numba: a kernel for every op" if engine == "auto" else "numba: asked for")
        except UnsupportedOp as e:
            if engine == "numba":
                raise BundleError(bundle.path, f"cannot run on numba: {e}") from None
            reason = f"onnxruntime: {e}"
        except (KeyError, ValueError) as e:
            raise BundleError(bundle.path, f"program does not match its weights or state: {e}") from None
    else:
        reason = "onnxruntime: asked for"
    from edge.engine.ort_engine import OrtExecutor
    try:
        ex = OrtExecutor(bundle.model_bytes, meta["state"], threads=threads)
    except Exception as e:  # onnxruntime raises its own exception types for invalid graphs
        raise BundleError(bundle.path, f"onnxruntime cannot load the graph: {str(e).splitlines()[0]}") from None
    return Model(bundle, ex, reason)


class Streams:
    """A model over named streams: `open` them, then `step` any subset by id.

    State lives in a StateTable (bounded, LRU-evicted, saved atomically). Ids that were never opened
    are refused, so a typo cannot silently start a fresh stream."""

    def __init__(self, model: Model, capacity: int = 1024, **table_options):
        from edge.engine.state_table import StateTable
        self.model = model
        fingerprint = repr([(s["name"], s["shape"]) for s in model.meta["state"]])
        self.table = StateTable(model.init_state(1)[0], capacity=capacity, fingerprint=fingerprint, **table_options)
        self._open = set()

    def open(self, *ids: str) -> None:
        self.table.slots(list(ids))
        self._open.update(ids)

    def close(self, stream_id: str) -> None:
        self._unknown([stream_id])
        self._open.discard(stream_id)
        if stream_id in self.table:
            self.table.drop(stream_id)

    def reset(self, stream_id: str) -> None:
        self._unknown([stream_id])
        self.table.reset(stream_id)

    def _unknown(self, ids):
        unknown = [i for i in ids if i not in self._open]
        if unknown:
            raise InputError(f"unknown stream id {unknown[0]!r} ({len(unknown)} unknown in the call): open it first")

    def step(self, ids, x) -> np.ndarray:
        """x [len(ids), C] -> y [len(ids), O]; each stream's state advanced."""
        ids = list(ids)
        self._unknown(ids)
        slots = self.table.slots(ids)
        state = self.table.gather(slots)
        y = self.model.step(x, state).copy()
        self.table.scatter(slots, state)
        return y

    def save(self, path) -> None:
        self.table.save(path)

    def restore(self, path) -> None:
        self.table.restore(path)
        self._open.update(self.table.ids())
