"""Sample payloads, both directions: JSON and a compact little-endian binary frame.

A decoded message is always ``(t [n] float64 seconds, x [n, C] float32)`` in the bundle's channel
order. The simulator (`edge.firmware_sim.mqtt_sim`) encodes with the same functions, so the two
ends cannot drift apart.

JSON (UTF-8). One sample is an object with ``t`` (seconds, a number) and its channels, either all
at once as ``"x": [C numbers]`` or in groups named by the channel prefix: channels ``acc_x, acc_y,
acc_z, gyr_x, gyr_y, gyr_z`` are ``"acc": [3], "gyr": [3]``. A message is one such object or an
array of them. ``null`` stands for a missing value (NaN): the sample is kept but not fed.

    {"t": 12.005, "acc": [0.1, -0.2, 9.81], "gyr": [0.01, 0.0, -0.02]}
    [{"t": 12.005, "x": [0.1, -0.2, 9.81, 0.01, 0.0, -0.02]}, {"t": 12.010, "x": [...]}]

Binary frame, little-endian, 24-byte header then the samples::

    offset size  field
    0      2     magic  b"EF"
    2      1     version (1)
    3      1     flags: bit 0 = explicit timestamps follow the header
    4      2     channels C (uint16)
    6      2     count n (uint16, >= 1)
    8      8     t0 (float64 seconds): time of the first sample
    16     8     dt (float64 seconds): sample i is at t0 + i*dt (ignored with bit 0)
    24     8n    (bit 0 only) n float64 timestamps
    ...    4nC   samples, float32, row-major [n, C]; NaN = missing value

Outputs use the same two forms: JSON ``{"t": [n], "y": [[O] * n]}`` and the frame with explicit
timestamps (C = the bundle's outputs).
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np

MAGIC = b"EF"
VERSION = 1
EXPLICIT_T = 1
HEADER = struct.Struct("<2sBBHHdd")          # magic, version, flags, channels, count, t0, dt  (24 bytes)


class PayloadError(ValueError):
    """A message that cannot be used. ``reason`` is the metrics label, the message says what."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


# ------------------------------------------------------------------------------- binary frame

def encode_frame(x, *, t0: float = 0.0, dt: float = 0.0, t=None) -> bytes:
    """x [n, C] -> one frame; timestamps t0 + i*dt, or explicit ``t`` [n]."""
    x = np.ascontiguousarray(x, dtype="<f4")
    n, c = x.shape
    if t is None:
        return HEADER.pack(MAGIC, VERSION, 0, c, n, t0, dt) + x.tobytes()
    t = np.ascontiguousarray(t, dtype="<f8")
    return HEADER.pack(MAGIC, VERSION, EXPLICIT_T, c, n, float(t[0]), 0.0) + t.tobytes() + x.tobytes()


def decode_frame(data: bytes, channels: int, max_samples: int):
    if len(data) < HEADER.size:
        raise PayloadError("bad_frame", f"frame of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, flags, c, n, t0, dt = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError("bad_frame", f"frame magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION or flags & ~EXPLICIT_T:
        raise PayloadError("bad_frame", f"frame version {version} flags {flags:#x}: this daemon reads version "
                                        f"{VERSION}, flag bit 0 only")
    if c != channels:
        raise PayloadError("wrong_channels", f"frame has {c} channels, the bundle reads {channels}")
    if n < 1 or n > max_samples:
        raise PayloadError("too_many_samples" if n else "bad_frame", f"frame holds {n} samples (1..{max_samples})")
    explicit = bool(flags & EXPLICIT_T)
    want = HEADER.size + (8 * n if explicit else 0) + 4 * n * c
    if len(data) != want:
        raise PayloadError("bad_frame", f"frame of {len(data)} bytes, its header says {want}")
    if explicit:
        t = np.frombuffer(data, "<f8", n, HEADER.size).astype(np.float64)
    else:
        if not (math.isfinite(t0) and math.isfinite(dt) and (dt > 0 or n == 1)):
            raise PayloadError("bad_time", f"frame t0={t0} dt={dt}: need finite t0 and dt > 0")
        t = t0 + dt * np.arange(n, dtype=np.float64)
        if not math.isfinite(t[-1]):
            raise PayloadError("bad_time", f"frame t0={t0} dt={dt}: the last timestamp overflows")
    if explicit and not np.isfinite(t).all():
        raise PayloadError("bad_time", "frame has a non-finite timestamp")
    x = np.frombuffer(data, "<f4", n * c, want - 4 * n * c).reshape(n, c)      # a read-only view of the payload
    return t, x


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

    def encode(self, t, x) -> bytes:
        """Samples as an array of objects in group form (or "x"); NaN -> null."""
        rows = []
        for ti, xi in zip(np.asarray(t, np.float64).tolist(), np.asarray(x, np.float64).tolist()):
            xi = [None if math.isnan(v) else v for v in xi]
            obj = {"t": ti}
            if self.groups:
                obj.update((g, [xi[i] for i in idx]) for g, idx in self.groups.items())
            else:
                obj["x"] = xi
            rows.append(obj)
        return json.dumps(rows, separators=(",", ":")).encode()

    def decode(self, data: bytes, max_samples: int):
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PayloadError("bad_json", f"not JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
        items = doc if isinstance(doc, list) else [doc]
        if not items or len(items) > max_samples:
            raise PayloadError("too_many_samples" if items else "bad_schema",
                               f"{len(items)} samples in the message (1..{max_samples})")
        n, c = len(items), len(self.channels)
        t = np.empty(n, np.float64)
        x = np.empty((n, c), np.float32)
        for k, s in enumerate(items):
            if not isinstance(s, dict):
                raise PayloadError("bad_schema", f"sample {k} is a {type(s).__name__}, expected an object")
            tk = s.get("t")
            if not _is_number(tk) or not math.isfinite(tk):
                raise PayloadError("bad_time", f"sample {k}: t={tk!r}, expected a finite number")
            t[k] = tk
            if "x" in s:
                x[k] = self._values(s["x"], c, k, "x")
            elif self.groups:
                for g, idx in self.groups.items():
                    x[k, idx] = self._values(s.get(g), len(idx), k, g)
            else:
                raise PayloadError("bad_schema", f"sample {k}: no \"x\" ({c} values)")
        return t, x

    @staticmethod
    def _values(v, size, k, key):
        if not isinstance(v, list) or len(v) != size:
            raise PayloadError("bad_schema", f"sample {k}: {key!r} must be a list of {size} numbers, got {str(v)[:60]}")
        out = []
        for e in v:
            if e is None:
                out.append(math.nan)
            elif _is_number(e):
                out.append(e)
            else:
                raise PayloadError("bad_schema", f"sample {k}: {key!r} holds {e!r}, not a number")
        return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def encode_outputs_json(t, y) -> bytes:
    return json.dumps({"t": np.asarray(t, np.float64).tolist(), "y": np.asarray(y, np.float64).tolist()},
                      separators=(",", ":")).encode()


def decode_outputs_json(data: bytes):
    doc = json.loads(data)
    return np.asarray(doc["t"], np.float64), np.asarray(doc["y"], np.float32)


class Decoder:
    """Payload -> (t, x) for one pipeline: format json | binary | auto."""

    def __init__(self, fmt: str, channels: list[str], max_samples: int, max_bytes: int):
        self.fmt, self.max_samples, self.max_bytes = fmt, max_samples, max_bytes
        self.layout = JsonLayout(channels)
        self.channels = len(channels)

    def __call__(self, data: bytes):
        if len(data) > self.max_bytes:
            raise PayloadError("too_large", f"payload of {len(data)} bytes > limits.max_payload_bytes {self.max_bytes}")
        if self.fmt == "binary" or (self.fmt == "auto" and data[:2] == MAGIC):
            return decode_frame(data, self.channels, self.max_samples)
        return self.layout.decode(data, self.max_samples)
