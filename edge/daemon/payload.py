"""Sample payloads, both directions: JSON and a compact little-endian binary frame.

A decoded message is always ``(t [n] float64 seconds, x [n, C] float32)`` in the bundle's channel
order. The simulator (`edge.firmware_sim.mqtt_sim`) encodes with the same functions, so the two
ends cannot drift apart.

JSON (UTF-8). One sample is an object with ``t`` (seconds, a number) and its channels, either all
at once as ``"x": [C numbers]`` or in groups named by the channel prefix: channels ``acc_x, acc_y,
acc_z, gyr_x, gyr_y, gyr_z`` are ``"acc": [3], "gyr": [3]``. A message is one such object or an
array of them. ``null`` stands for a missing value (NaN): the sample is kept but not fed.
``seq`` (optional, an integer >= 0) numbers the device's samples: how many it sent before this one.
In an array only the first sample's ``seq`` is read (the others are the next numbers). A receiver
counts the numbers that never arrive (``edge_samples_missing_total``).

    {"t": 12.005, "seq": 2401, "acc": [0.1, -0.2, 9.81], "gyr": [0.01, 0.0, -0.02]}
    [{"t": 12.005, "x": [0.1, -0.2, 9.81, 0.01, 0.0, -0.02]}, {"t": 12.010, "x": [...]}]

Binary frame, little-endian, 24-byte header then the samples::

    offset size  field
    0      2     magic  b"EF"
    2      1     version (1)
    3      1     flags: bit 0 = explicit timestamps follow, bit 1 = a sequence number follows
    4      2     channels C (uint16)
    6      2     count n (uint16, >= 1)
    8      8     t0 (float64 seconds): time of the first sample
    16     8     dt (float64 seconds): sample i is at t0 + i*dt (ignored with bit 0)
    24     8     (bit 1 only) seq (uint64): the first sample's number, as ``seq`` in JSON
    ...    8n    (bit 0 only) n float64 timestamps
    ...    4nC   samples, float32, row-major [n, C]; NaN = missing value

Outputs use the same two forms: JSON ``{"t": [n], "y": [[O] * n]}`` and the frame with explicit
timestamps (C = the bundle's outputs).
"""
from __future__ import annotations

import math
import struct

import numpy as np
import orjson

MAGIC = b"EF"
VERSION = 1
EXPLICIT_T = 1
WITH_SEQ = 2
HEADER = struct.Struct("<2sBBHHdd")          # magic, version, flags, channels, count, t0, dt  (24 bytes)
SEQ = struct.Struct("<Q")
MAX_SEQ = 2 ** 63 - 1                        # JSON integers and uint64 frames share this range


class PayloadError(ValueError):
    """A message that cannot be used. ``reason`` is the metrics label, the message says what."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


# ------------------------------------------------------------------------------- binary frame

def encode_frame(x, *, t0: float = 0.0, dt: float = 0.0, t=None, seq: int | None = None) -> bytes:
    """x [n, C] -> one frame; timestamps t0 + i*dt, or explicit ``t`` [n]; ``seq``: the first sample's number."""
    x = np.ascontiguousarray(x, dtype="<f4")
    n, c = x.shape
    flags = 0 if seq is None else WITH_SEQ
    head = b"" if seq is None else SEQ.pack(seq)
    if t is None:
        return HEADER.pack(MAGIC, VERSION, flags, c, n, t0, dt) + head + x.tobytes()
    t = np.ascontiguousarray(t, dtype="<f8")
    return HEADER.pack(MAGIC, VERSION, flags | EXPLICIT_T, c, n, float(t[0]), 0.0) + head + t.tobytes() + x.tobytes()


def decode_frame(data: bytes, channels: int, max_samples: int):
    """One frame -> (t [n], x [n, C]); see `decode_frame_seq` for its sequence number too."""
    return decode_frame_seq(data, channels, max_samples)[:2]


def decode_frame_seq(data: bytes, channels: int, max_samples: int):
    """One frame -> (t [n] float64, x [n, C] float32 read-only view, seq or None)."""
    if len(data) < HEADER.size:
        raise PayloadError("bad_frame", f"frame of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, flags, c, n, t0, dt = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError("bad_frame", f"frame magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION or flags & ~(EXPLICIT_T | WITH_SEQ):
        raise PayloadError("bad_frame", f"frame version {version} flags {flags:#x}: this daemon reads version "
                                        f"{VERSION}, flag bits 0 and 1 only")
    if c != channels:
        raise PayloadError("wrong_channels", f"frame has {c} channels, the bundle reads {channels}")
    if n < 1 or n > max_samples:
        raise PayloadError("too_many_samples" if n else "bad_frame", f"frame holds {n} samples (1..{max_samples})")
    explicit, at = bool(flags & EXPLICIT_T), HEADER.size + (SEQ.size if flags & WITH_SEQ else 0)
    want = at + (8 * n if explicit else 0) + 4 * n * c
    if len(data) != want:
        raise PayloadError("bad_frame", f"frame of {len(data)} bytes, its header says {want}")
    seq = SEQ.unpack_from(data, HEADER.size)[0] if flags & WITH_SEQ else None
    if seq is not None and seq > MAX_SEQ:
        raise PayloadError("bad_seq", f"frame seq {seq} > {MAX_SEQ}")
    if explicit:
        t = np.frombuffer(data, "<f8", n, at).astype(np.float64)
    else:
        if not (math.isfinite(t0) and math.isfinite(dt) and (dt > 0 or n == 1)):
            raise PayloadError("bad_time", f"frame t0={t0} dt={dt}: need finite t0 and dt > 0")
        t = t0 + dt * np.arange(n, dtype=np.float64)
        if not math.isfinite(t[-1]):
            raise PayloadError("bad_time", f"frame t0={t0} dt={dt}: the last timestamp overflows")
    if explicit and not np.isfinite(t).all():
        raise PayloadError("bad_time", "frame has a non-finite timestamp")
    x = np.frombuffer(data, "<f4", n * c, want - 4 * n * c).reshape(n, c)      # a read-only view of the payload
    return t, x, seq


# ------------------------------------------------------------------------------------- JSON

class JsonLayout:
    """How a bundle's input channels are spelled in a JSON sample: ``x`` or prefix groups."""

    def __init__(self, channels: list[str]):
        self.channels = list(channels)
        self.groups: dict[str, list[int]] = {}
        for i, name in enumerate(self.channels):
            prefix, sep, _ = name.rpartition("_")
            if sep:
                self.groups.setdefault(prefix, []).append(i)
        if sorted(i for g in self.groups.values() for i in g) != list(range(len(self.channels))):
            self.groups = {}          # not every channel is in a group: only "x" spells them
        # channel index of each value when the groups are read one after another
        flat = [i for g in self.groups.values() for i in g]
        self.order = [flat.index(i) for i in range(len(flat))]
        self.in_order = flat == list(range(len(flat)))

    def encode(self, t, x, seq: int | None = None, single: bool = False) -> bytes:
        """Samples as an array of objects in group form (or "x"); NaN -> null; ``seq`` on the first.
        ``single``: one sample as a bare object (what most devices send)."""
        rows = []
        for ti, xi in zip(np.asarray(t, np.float64).tolist(), np.asarray(x, np.float64).tolist()):
            xi = [None if math.isnan(v) else v for v in xi]
            obj = {"t": ti}
            if seq is not None and not rows:
                obj["seq"] = int(seq)
            if self.groups:
                obj.update((g, [xi[i] for i in idx]) for g, idx in self.groups.items())
            else:
                obj["x"] = xi
            rows.append(obj)
        return orjson.dumps(rows[0] if single and len(rows) == 1 else rows)

    def decode(self, data: bytes, max_samples: int):
        """-> (t [n] float64, x [n, C] float32, seq or None)."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise PayloadError("bad_json", f"not JSON ({str(e)[:80]})") from None
        items = doc if type(doc) is list else [doc]
        if not items or len(items) > max_samples:
            raise PayloadError("too_many_samples" if items else "bad_schema",
                               f"{len(items)} samples in the message (1..{max_samples})")
        c = len(self.channels)
        t, rows = [], []
        groups = list(self.groups.items())
        for k, s in enumerate(items):
            if type(s) is not dict:
                raise PayloadError("bad_schema", f"sample {k} is a {type(s).__name__}, expected an object")
            tk = s.get("t")
            if not _is_number(tk) or not math.isfinite(tk):
                raise PayloadError("bad_time", f"sample {k}: t={tk!r}, expected a finite number")
            t.append(tk)
            if "x" in s:
                rows.append(_values(s["x"], c, k, "x"))
            elif groups:
                row = []
                for g, idx in groups:            # groups cover the channels in order (see __init__)
                    row += _values(s.get(g), len(idx), k, g)
                rows.append(row if self.in_order else [row[i] for i in self.order])
            else:
                raise PayloadError("bad_schema", f"sample {k}: no \"x\" ({c} values)")
        seq = items[0].get("seq")
        if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
            raise PayloadError("bad_seq", f"seq={seq!r}, expected an integer 0..{MAX_SEQ}")
        try:
            with np.errstate(over="ignore"):             # beyond float32: inf, a non-finite sample (not fed)
                x = np.array(rows, np.float64).astype(np.float32)   # None -> NaN
        except OverflowError:
            raise PayloadError("bad_schema", "a value beyond float64") from None
        return np.array(t, np.float64), x, seq


def _values(v, size, k, key) -> list:
    """A list of `size` numbers or nulls, checked (orjson gives int, float, None for those)."""
    if type(v) is not list:
        raise PayloadError("bad_schema", f"sample {k}: {key!r} must be a list of {size} numbers, got {str(v)[:60]}")
    if len(v) != size:              # a device sending another channel count (docs/daemon.md: wrong_channels)
        raise PayloadError("wrong_channels", f"sample {k}: {key!r} holds {len(v)} values, the bundle reads {size}")
    for e in v:
        if type(e) is not float and e is not None and type(e) is not int:
            raise PayloadError("bad_schema", f"sample {k}: {key!r} holds {e!r}, not a number")
    return v


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def encode_outputs_json(t, y) -> bytes:
    return orjson.dumps({"t": np.asarray(t, np.float64).tolist(), "y": np.asarray(y, np.float64).tolist()})


def decode_outputs_json(data: bytes):
    doc = orjson.loads(data)
    return np.asarray(doc["t"], np.float64), np.asarray(doc["y"], np.float32)


class Decoder:
    """Payload -> (t, x) for one pipeline: format json | binary | auto."""

    def __init__(self, fmt: str, channels: list[str], max_samples: int, max_bytes: int):
        self.fmt, self.max_samples, self.max_bytes = fmt, max_samples, max_bytes
        self.layout = JsonLayout(channels)
        self.channels = len(channels)

    def __call__(self, data: bytes):
        """-> (t [n], x [n, C], seq or None)."""
        if len(data) > self.max_bytes:
            raise PayloadError("too_large", f"payload of {len(data)} bytes > limits.max_payload_bytes {self.max_bytes}")
        if self.fmt == "binary" or (self.fmt == "auto" and data[:2] == MAGIC):
            return decode_frame_seq(data, self.channels, self.max_samples)
        return self.layout.decode(data, self.max_samples)
