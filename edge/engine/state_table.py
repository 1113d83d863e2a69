"""Per-stream recurrent state: one flat float32 row per stream id, in one contiguous array.

An executor whose state is a flat float32 vector per stream asks the table for the slot of
each stream in its batch and then reads/updates ``table.rows[slot]`` in place (or, if it needs
a dense batch, ``gather`` -> step -> ``scatter``)::

    slots = table.slots(["imu-1", "imu-7"], now=t)   # may create / evict / grow
    rows = table.rows                                 # re-read after every slots() call
    rows[slots] = step(x, rows[slots])

Design choices
--------------
* **Storage grows geometrically.** ``rows`` starts with ``min(capacity, initial_slots)`` rows
  and doubles (never beyond ``capacity``) when every slot is taken. Growing reallocates, so
  **callers must re-read ``table.rows`` after each ``slots()`` call** (and after ``restore``);
  a reference kept from before may be a stale copy. Slots themselves never move: a live
  stream keeps its slot until it is dropped or evicted.
* **LRU by use, not by timestamp.** Recency is the order of ``slots()`` calls (within a call,
  the order of the ids). Eviction takes the least recently used stream *not* in the current
  call. ``now`` only drives ``reset_after_s``.
* **Distinct slots per call.** The slots returned by one call are pairwise distinct, so a
  vectorised in-place update is well defined. A call that names an id twice raises
  ``ValueError`` (split such a batch), as does a call with more distinct ids than
  ``capacity``. Both are checked before anything changes.
* **Eviction checkpoint** (``evict_to``): an evicted stream's row and last-seen time are
  written atomically to ``<evict_to>/<sha256(fingerprint, id)>.npz`` (same format as
  ``save``, one stream). If the stream comes back, the row is restored and the file removed.
  The file name includes the fingerprint, so a new state layout never picks up old rows.
  Writing or reading such a file never raises out of ``slots()``: a failure is logged, counted
  (``checkpoint_errors``) and the stream goes on (from the initial row if it could not be
  restored; an unreadable file is renamed to ``*.bad``).
* **Gap reset** (``reset_after_s``): when ``now`` is given and the stream was last seen more
  than ``reset_after_s`` before it, its row is reset to the initial row *before* this sample
  is processed. The last-seen time survives eviction, ``save`` and ``restore``.
* **Files.** ``save`` writes an uncompressed ``.npz`` with ``format_version``,
  ``fingerprint``, ``state_size``, ``ids`` (oldest use first), ``rows``, ``last_seen``
  (NaN = never timestamped) and a SHA-256 ``checksum`` over all of them. It is atomic: temp
  file in the same directory, flush, ``os.fsync``, ``os.replace``, fsync of the directory.
  ``restore``/``load`` validate everything before touching the table and answer any problem
  (truncated, corrupt, wrong version, wrong fingerprint, wrong state size, ...) with one
  ``StateFileError`` naming the file and the problem. A missing file raises the ordinary
  ``FileNotFoundError``.

Not thread-safe: serialise access (the streaming loop owns its table).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.io.atomic import atomic_open

__all__ = ["StateTable", "StateFileError", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_KEYS = ("format_version", "fingerprint", "state_size", "ids", "rows", "last_seen", "checksum")


class StateFileError(ValueError):
    """A state file (checkpoint) that cannot be used; the message names the file and why."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"state file {self.path}: {problem}")


# --------------------------------------------------------------------------- file format


def _checksum(version: int, fingerprint: str, state_size: int, ids: np.ndarray,
              rows: np.ndarray, last_seen: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"edge-state-table\0{version}\0{state_size}\0{len(ids)}\0".encode())
    h.update(fingerprint.encode("utf-8", "surrogatepass") + b"\0")
    for sid in ids.tolist():
        b = sid.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)
    h.update(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(last_seen, dtype="<f8").tobytes())
    return h.hexdigest()


def _write_state_file(path: str | os.PathLike, fingerprint: str, state_size: int,
                      ids: list[str], rows: np.ndarray, last_seen: np.ndarray) -> None:
    """Atomically write a state file: temp in the same dir, flush, fsync, replace, fsync dir."""
    ids_arr = np.array(ids, dtype=np.str_)
    if ids_arr.ndim != 1:  # np.array([]) of str keeps ndim 1; guard anyway
        ids_arr = ids_arr.reshape(-1)
    rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(len(ids), state_size)
    last_seen = np.ascontiguousarray(last_seen, dtype=np.float64).reshape(len(ids))
    _refuse_nonfinite(path, ids, rows, "not written")
    payload = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "fingerprint": np.array(fingerprint, dtype=np.str_),
        "state_size": np.array(state_size, dtype=np.int64),
        "ids": ids_arr,
        "rows": rows,
        "last_seen": last_seen,
        "checksum": np.array(_checksum(FORMAT_VERSION, fingerprint, state_size, ids_arr,
                                       rows, last_seen), dtype=np.str_),
    }
    with atomic_open(path, "wb") as f:
        np.savez(f, **payload)  # a file object: numpy does not append ".npz"


def _read_state_file(path: str | os.PathLike, fingerprint: str, state_size: int):
    """Read and fully validate a state file -> (ids list, rows [n, S] f32, last_seen [n] f64)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"state file {path}: does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise StateFileError(path, f"not a state table file (missing {', '.join(missing)})")
            data = {k: z[k] for k in _KEYS}
    except StateFileError:
        raise
    except Exception as e:  # BadZipFile, EOFError, CRC errors, pickled data, bad headers, ...
        raise StateFileError(path, f"truncated or corrupt ({type(e).__name__}: {e})") from e

    def scalar(key, kind):
        a = data[key]
        if a.shape != () or a.dtype.kind not in kind:
            raise StateFileError(path, f"corrupt: field {key!r} has dtype {a.dtype} shape {a.shape}")
        return a.item()

    version = scalar("format_version", "iu")
    if version != FORMAT_VERSION:
        raise StateFileError(path, f"format version {version}, this runtime reads {FORMAT_VERSION}")
    file_fp = scalar("fingerprint", "U")
    if file_fp != fingerprint:
        raise StateFileError(path, f"fingerprint {file_fp!r} does not match expected {fingerprint!r}"
                                   " (state layout of another model)")
    file_size = scalar("state_size", "iu")
    ids, rows, last_seen = data["ids"], data["rows"], data["last_seen"]
    if rows.ndim != 2 or rows.dtype != np.float32:
        raise StateFileError(path, f"corrupt: rows have dtype {rows.dtype} shape {rows.shape}")
    if file_size != state_size or rows.shape[1] != state_size:
        width = "" if rows.shape[1] == file_size else f" (rows {rows.shape[1]} wide)"
        raise StateFileError(path, f"state size {file_size}{width}, expected {state_size}")
    n = rows.shape[0]
    if ids.shape != (n,) or (n and ids.dtype.kind != "U"):
        raise StateFileError(path, f"corrupt: {ids.shape} ids of dtype {ids.dtype} for {n} rows")
    if last_seen.shape != (n,) or last_seen.dtype != np.float64:
        raise StateFileError(path, f"corrupt: last_seen {last_seen.dtype} {last_seen.shape}"
                                   f" for {n} rows")
    if scalar("checksum", "U") != _checksum(version, file_fp, file_size, ids, rows, last_seen):
        raise StateFileError(path, "corrupt: checksum mismatch")
    id_list = [str(s) for s in ids.tolist()]
    if len(set(id_list)) != n:
        raise StateFileError(path, "corrupt: duplicate stream ids")
    _refuse_nonfinite(path, id_list, rows, "refused")
    return id_list, rows, last_seen


def _refuse_nonfinite(path, ids, rows: np.ndarray, what: str) -> None:
    """A NaN/Inf state is never checkpointed nor resumed (the runtime's state guard resets it first)."""
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        raise StateFileError(path, f"stream {ids[int(bad[0])]!r} holds a non-finite state (NaN/Inf; {bad.size} of "
                                   f"{len(ids)} streams): {what}")


# --------------------------------------------------------------------------- the table


class StateTable:
    """Per-stream state rows, slot per stream id, bounded by LRU eviction (see module doc)."""

    def __init__(self, init_row: np.ndarray, capacity: int = 1024,
                 evict_to: str | os.PathLike | None = None,
                 reset_after_s: float | None = None, fingerprint: str = "",
                 initial_slots: int = 16):
        init = np.asarray(init_row)
        if init.ndim != 1:
            raise ValueError(f"init_row must be 1-D [state_size], got shape {init.shape}")
        if not np.issubdtype(init.dtype, np.number) or not np.all(np.isfinite(init)):
            raise ValueError("init_row must hold finite numbers")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if reset_after_s is not None:
            reset_after_s = float(reset_after_s)
            if not (reset_after_s >= 0 and math.isfinite(reset_after_s)):
                raise ValueError(f"reset_after_s must be a finite number >= 0 or None,"
                                 f" got {reset_after_s!r}")
        if not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        if isinstance(initial_slots, bool) or not isinstance(initial_slots, (int, np.integer)) \
                or initial_slots < 1:
            raise ValueError(f"initial_slots must be an integer >= 1, got {initial_slots!r}")

        self._init = np.ascontiguousarray(init, dtype=np.float32).copy()
        self._init.setflags(write=False)
        self.state_size = int(self._init.shape[0])
        self.capacity = int(capacity)
        self.reset_after_s = reset_after_s
        self.fingerprint = fingerprint
        self.evict_to = None if evict_to is None else Path(evict_to)
        if self.evict_to is not None:
            self.evict_to.mkdir(parents=True, exist_ok=True)

        n0 = min(self.capacity, int(initial_slots))
        self.rows = np.empty((n0, self.state_size), dtype=np.float32)
        self.rows[:] = self._init
        self._last_seen = np.full(n0, np.nan, dtype=np.float64)
        self._free = list(range(n0 - 1, -1, -1))  # pop() gives the lowest slot first
        self._lru: OrderedDict[str, int] = OrderedDict()  # id -> slot, oldest use first
        self._gather_buf = np.empty((0, self.state_size), dtype=np.float32)

        # counters for metrics
        self.evictions = 0
        self.resets = 0          # gap resets (reset_after_s)
        self.restored = 0        # rows brought back from evict_to
        self.checkpoint_errors = 0

    # ---------------------------------------------------------------- introspection

    @property
    def init_row(self) -> np.ndarray:
        """The (read-only) initial state row."""
        return self._init

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, stream_id: object) -> bool:
        """True if the stream is live in memory (not if it is only checkpointed in evict_to)."""
        return stream_id in self._lru

    def ids(self) -> list[str]:
        """Live stream ids, least recently used first."""
        return list(self._lru)

    def slot_of(self, stream_id: str) -> int:
        """The slot of a live stream (no creation, no recency update); KeyError if not live."""
        try:
            return self._lru[stream_id]
        except KeyError:
            raise KeyError(f"unknown stream id {stream_id!r}: not live in the state table") from None

    def last_seen(self, stream_id: str) -> float | None:
        """Last timestamp given for a live stream, None if never timestamped."""
        t = self._last_seen[self.slot_of(stream_id)]
        return None if math.isnan(t) else float(t)

    # ---------------------------------------------------------------- slots

    def slots(self, stream_ids: Sequence[str], now: float | Sequence[float] | None = None
              ) -> np.ndarray:
        """int64 slot per id (distinct within the call), creating / restoring / evicting as needed.

        ``now`` is one timestamp for the whole call or one per id. May reallocate ``rows``:
        re-read ``table.rows`` afterwards.
        """
        if isinstance(stream_ids, (str, bytes)):
            raise TypeError("stream_ids must be a sequence of str ids, not a single string")
        ids = list(stream_ids)
        n = len(ids)
        for sid in ids:
            if not isinstance(sid, str):
                raise TypeError(f"stream ids must be str, got {type(sid).__name__} ({sid!r})")
            if "\0" in sid:
                raise ValueError(f"stream id {sid!r} contains a NUL character")
        if len(set(ids)) != n:
            seen, dups = set(), []
            for sid in ids:
                if sid in seen and sid not in dups:
                    dups.append(sid)
                seen.add(sid)
            raise ValueError(f"stream ids repeated in one call ({', '.join(map(repr, dups[:5]))}):"
                             " each stream may appear once per batch")
        if n > self.capacity:
            raise ValueError(f"{n} distinct stream ids in one call exceed the state table"
                             f" capacity {self.capacity}; split the batch or raise capacity")
        times = self._check_now(now, n)

        out = np.empty(n, dtype=np.int64)
        lru = self._lru
        new = []
        # First touch every live id, so that all ids of this call sit at the recent end of the
        # LRU order and eviction (from the old end) can never take one of them.
        for i, sid in enumerate(ids):
            slot = lru.get(sid)
            if slot is None:
                new.append(i)
                continue
            lru.move_to_end(sid)
            out[i] = slot
            if times is not None:
                self._touch(slot, times[i])
        for i in new:
            sid = ids[i]
            slot = self._take_slot()
            lru[sid] = slot
            if not (self.evict_to is not None and self._restore_evicted(sid, slot)):
                self.rows[slot] = self._init
                self._last_seen[slot] = np.nan
            if times is not None:
                self._touch(slot, times[i])
            out[i] = slot
        return out

    def _check_now(self, now, n: int) -> np.ndarray | None:
        if now is None:
            return None
        t = np.asarray(now, dtype=np.float64)
        if t.ndim == 0:
            t = np.full(n, float(t))
        elif t.shape != (n,):
            raise ValueError(f"now must be a scalar or one timestamp per id ({n}), got shape {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("now must be finite")
        return t

    def _touch(self, slot: int, t: float) -> None:
        last = self._last_seen[slot]
        if (self.reset_after_s is not None and not math.isnan(last)
                and t - last > self.reset_after_s):
            self.rows[slot] = self._init
            self.resets += 1
        self._last_seen[slot] = t

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        allocated = self.rows.shape[0]
        if allocated < self.capacity:
            self._grow(min(self.capacity, 2 * allocated))
            return self._free.pop()
        sid, slot = self._lru.popitem(last=False)
        self.evictions += 1
        if self.evict_to is not None:
            self._checkpoint_evicted(sid, slot)
        return slot

    def _grow(self, new_size: int) -> None:
        old = self.rows.shape[0]
        rows = np.empty((new_size, self.state_size), dtype=np.float32)
        rows[:old] = self.rows
        rows[old:] = self._init
        last = np.full(new_size, np.nan, dtype=np.float64)
        last[:old] = self._last_seen
        self.rows, self._last_seen = rows, last
        self._free.extend(range(new_size - 1, old - 1, -1))

    # ---------------------------------------------------------------- eviction checkpoints

    def _evict_path(self, stream_id: str) -> Path:
        assert self.evict_to is not None
        h = hashlib.sha256()
        h.update(self.fingerprint.encode("utf-8", "surrogatepass") + b"\0")
        h.update(stream_id.encode("utf-8", "surrogatepass"))
        return self.evict_to / f"{h.hexdigest()[:40]}.npz"

    def _checkpoint_evicted(self, stream_id: str, slot: int) -> None:
        self._checkpoint_one(stream_id, self.rows[slot:slot + 1], self._last_seen[slot:slot + 1])

    def _checkpoint_one(self, stream_id: str, row: np.ndarray, last: np.ndarray) -> None:
        path = self._evict_path(stream_id)
        try:
            _write_state_file(path, self.fingerprint, self.state_size, [stream_id], row, last)
        except OSError as e:
            self.checkpoint_errors += 1
            log.error("state table: could not checkpoint evicted stream %r to %s (%s);"
                      " its state is lost", stream_id, path, e)

    def _restore_evicted(self, stream_id: str, slot: int) -> bool:
        path = self._evict_path(stream_id)
        if not path.exists():
            return False
        try:
            ids, rows, last = _read_state_file(path, self.fingerprint, self.state_size)
            if len(ids) != 1:
                raise StateFileError(path, f"corrupt: eviction checkpoint holds {len(ids)} streams")
        except (StateFileError, OSError) as e:
            self.checkpoint_errors += 1
            log.error("state table: cannot restore evicted stream %r (%s); starting it fresh",
                      stream_id, e)
            try:
                os.replace(path, str(path) + ".bad")
            except OSError:
                pass
            return False
        if ids[0] != stream_id:  # hash collision: the file belongs to another stream
            return False
        self.rows[slot] = rows[0]
        self._last_seen[slot] = last[0]
        self.restored += 1
        self._unlink_evicted(path)
        return True

    def _unlink_evicted(self, path: Path) -> bool:
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            log.error("state table: could not remove eviction checkpoint %s (%s)", path, e)
            return True

    def _evicted_file(self, stream_id: str) -> Path | None:
        if self.evict_to is None:
            return None
        path = self._evict_path(stream_id)
        return path if path.exists() else None

    # ---------------------------------------------------------------- reset / drop

    def reset(self, stream_id: str) -> None:
        """Set a stream's state back to the initial row.

        For a stream only checkpointed in ``evict_to``, the checkpoint is removed (it comes back
        fresh). KeyError for an id the table does not know.
        """
        slot = self._lru.get(stream_id)
        if slot is not None:
            self.rows[slot] = self._init
            return
        path = self._evicted_file(stream_id)
        if path is None:
            raise KeyError(f"unknown stream id {stream_id!r}: cannot reset it")
        self._unlink_evicted(path)

    def drop(self, stream_id: str) -> None:
        """Forget a stream (its slot is freed; any eviction checkpoint removed).

        KeyError for an id the table does not know.
        """
        slot = self._lru.pop(stream_id, None)
        path = self._evicted_file(stream_id)
        if slot is None and path is None:
            raise KeyError(f"unknown stream id {stream_id!r}: cannot drop it")
        if slot is not None:
            self._last_seen[slot] = np.nan
            self._free.append(slot)
        if path is not None:
            self._unlink_evicted(path)

    # ---------------------------------------------------------------- dense batches

    def _check_slots(self, slots) -> np.ndarray:
        s = np.asarray(slots)
        if s.ndim != 1 or (s.size and s.dtype.kind not in "iu"):
            raise ValueError(f"slots must be a 1-D integer array, got {s.dtype} {s.shape}")
        if s.size and (s.min() < 0 or s.max() >= self.rows.shape[0]):
            raise IndexError(f"slot out of range [0, {self.rows.shape[0]})")
        return s.astype(np.intp, copy=False)

    def gather(self, slots, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the rows of ``slots`` into a dense ``[len(slots), state_size]`` float32 array.

        With ``out=None`` the result is a view of an internal buffer reused by the next
        ``gather`` call (no allocation in steady state); pass ``out`` to keep it.
        """
        s = self._check_slots(slots)
        n = s.shape[0]
        if out is None:
            if self._gather_buf.shape[0] < n:
                self._gather_buf = np.empty((max(n, 2 * self._gather_buf.shape[0]),
                                             self.state_size), dtype=np.float32)
            out = self._gather_buf[:n]
        elif out.shape != (n, self.state_size) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {(n, self.state_size)},"
                             f" got {out.dtype} {out.shape}")
        np.take(self.rows, s, axis=0, out=out, mode="clip")  # bounds checked above
        return out

    def scatter(self, slots, rows: np.ndarray) -> None:
        """Write dense ``rows [len(slots), state_size]`` back into the table at ``slots``."""
        s = self._check_slots(slots)
        r = np.asarray(rows)
        if r.shape != (s.shape[0], self.state_size):
            raise ValueError(f"rows must have shape {(s.shape[0], self.state_size)}, got {r.shape}")
        self.rows[s] = r

    # ---------------------------------------------------------------- save / restore

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the live streams (ids, rows, last-seen times) to ``path`` (.npz)."""
        ids = list(self._lru)  # least recently used first: restore keeps the LRU order
        idx = np.fromiter(self._lru.values(), dtype=np.intp, count=len(ids))
        _write_state_file(path, self.fingerprint, self.state_size, ids,
                          self.rows[idx], self._last_seen[idx])

    def restore(self, path: str | os.PathLike) -> None:
        """Replace the table's live streams with those saved in ``path``.

        The file is validated first (StateFileError on any problem; the table is then left
        unchanged). If the file holds more streams than ``capacity``, the most recently used
        ones are kept and the others evicted (checkpointed when ``evict_to`` is set).
        """
        ids, rows, last = _read_state_file(path, self.fingerprint, self.state_size)
        n = len(ids)
        keep_from = max(0, n - self.capacity)
        if keep_from:
            log.warning("state table: %s holds %d streams, capacity is %d; evicting the %d"
                        " least recently used", os.fspath(path), n, self.capacity, keep_from)
        size = min(self.capacity, max(self.rows.shape[0], n - keep_from))
        self.rows = np.empty((size, self.state_size), dtype=np.float32)
        self.rows[:] = self._init
        self._last_seen = np.full(size, np.nan, dtype=np.float64)
        self._lru = OrderedDict()
        k = n - keep_from
        for j in range(keep_from, n):
            slot = j - keep_from
            self._lru[ids[j]] = slot
            if self.evict_to is not None:  # a live row supersedes any older checkpoint
                self._unlink_evicted(self._evict_path(ids[j]))
        self.rows[:k] = rows[keep_from:]
        self._last_seen[:k] = last[keep_from:]
        self._free = list(range(size - 1, k - 1, -1))
        for j in range(keep_from):
            if self.evict_to is not None:
                self._checkpoint_one(ids[j], rows[j:j + 1], last[j:j + 1])
            self.evictions += 1

    @classmethod
    def load(cls, path: str | os.PathLike, init_row: np.ndarray, *, capacity: int = 1024,
             evict_to: str | os.PathLike | None = None, reset_after_s: float | None = None,
             fingerprint: str = "", initial_slots: int = 16) -> "StateTable":
        """A new table with these settings, restored from ``path`` (see ``restore``)."""
        table = cls(init_row, capacity=capacity, evict_to=evict_to, reset_after_s=reset_after_s,
                    fingerprint=fingerprint, initial_slots=initial_slots)
        table.restore(path)
        return table
