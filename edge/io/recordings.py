"""Recorded IMU streams: read, validate, resample, write (runtime side, numpy only).

Formats (chosen by the file name):

* **CSV** (``.csv``, ``.csv.gz``, ``.txt``, ``.tsv``), read by pyarrow's streaming CSV reader in 1 MiB
  blocks (quoted fields, CRLF, a UTF-8 BOM; the delimiter is a tab or ``;`` when the header uses one,
  else ``,``): one header line naming the columns
  (case-insensitive), then one sample per line. Required: ``acc_x,acc_y,acc_z`` (m/s², or g with ``acc_unit="g"``) and
  ``gyr_x,gyr_y,gyr_z`` (rad/s, or deg/s with ``gyr_unit="deg/s"``). Optional: ``t`` (seconds),
  a reference orientation ``qw,qx,qy,qz`` (sensor-to-ENU, w,x,y,z), a scoring mask ``movement``
  (or ``scored``, non-zero = scored). Any other column is kept as an extra channel (unit ``""`` unless known: ``mag_*`` in µT).
  Blank lines and lines starting with ``#`` are skipped; an empty cell reads as NaN.
* **NPZ** (``.npz``) with the BROAD keys: ``acc``, ``gyr`` (required), ``quat``, ``movement``,
  ``sampling_rate``, optional ``t`` and ``mag`` (kept as channels ``mag_x,mag_y,mag_z`` in µT).
* **JSON lines** (``.jsonl``, ``.ndjson``, ``.json``): one object per line,
  ``{"t": 0.0035, "acc": [ax, ay, az], "gyr": [gx, gy, gz]}``; optional ``"quat": [w, x, y, z]``
  and ``"movement": true``; other numeric scalar keys become extra channels. ``null`` reads as NaN.

**Other sensors** (``channels=[...]``, e.g. the inputs a forecasting bundle names): the file must have
those columns (CSV), scalar keys (JSON lines) or 1-D arrays (NPZ) instead of acc/gyr; every other
numeric column is kept as an extra channel. A CSV column ``date``, ``datetime`` or ``timestamp`` of ISO
date-times (``2016-07-01 00:00:00``) becomes ``t`` in seconds since the Unix epoch. Unit conversion and
the unit checks below apply to IMU channels only. A channel list that includes all six IMU channels
reads the file as an IMU recording.

IMU channels are converted to m/s² and rad/s on reading. Without a ``t`` column / key the caller must
give ``rate_hz``; with ``t`` the nominal rate is ``1 / median(Δt)`` unless ``rate_hz`` is given.

Documented rules for imperfect files (the replay and the daemon rely on them):

* **Errors** (`RecordingError`, one line naming the file and the line): a missing required column
  (all missing ones are listed), a cell that is not a number, a line with the wrong number of fields
  (except a truncated last line, below), a ``t`` that is not finite or does not increase (the line
  of the first back-step or repeat is named), implausible units (median ``|acc|`` over the file
  outside [7, 13] m/s² after conversion, or the 99th percentile of ``|gyr|`` above 50 rad/s;
  ``check_units=False`` turns this off).
* **Truncated last line**: when the *last* data line is incomplete — fewer fields than the header,
  or, in a file that does not end with a newline, a last cell that is not a number; for JSON lines,
  a last line that is not a complete JSON object — that one line is dropped with a
  `RecordingWarning` (also kept in ``Recording.warnings``). The same defect anywhere else is an error.
* **Non-finite samples**: a sample with NaN or ±Inf in any acc/gyr channel is *not fed* to an
  estimator (``Recording.valid`` is False there); it is kept in ``x`` so indices and line numbers
  stay aligned with the file. Reference rows with NaN (motion-capture occlusion) are fine: the
  metric skips them.
* **Gaps**: a gap is a stretch with no fed sample that lasts longer than ``gap_s`` (default: 0.5 s or
  `GAP_PERIODS` nominal sample periods, whichever is longer — so hourly data is not all gaps),
  measured between the fed samples around it (or the edge of the file): a long NaN run, a jump in
  ``t``, or both. ``Recording.gaps`` lists them as half-open index ranges ``(start, end)``: samples
  ``start .. end-1`` are not fed (``start == end`` for a pure time jump), and ``end`` is the first fed
  sample after the gap — where a replay resets (or deliberately holds) its state. A NaN run no longer
  than ``gap_s`` is not a gap: its samples are skipped and the state is held across them.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.io.atomic import atomic_write
from edge.quaternion import quat_normalize, quat_slerp
from edge.validate import GYR_RATIO_HIGH, GYR_RATIO_LOW, STANDARD_GRAVITY, gyro_rate_ratio

__all__ = [
    "Recording", "RecordingError", "RecordingWarning", "read_recording", "write_recording_csv",
    "resample", "find_gaps",
    "IMU_CHANNELS", "ACC_CHANNELS", "GYR_CHANNELS", "REFERENCE_COLUMNS",
    "DEFAULT_GAP_S", "STANDARD_GRAVITY", "default_gap_s",
]

ACC_CHANNELS = ("acc_x", "acc_y", "acc_z")
GYR_CHANNELS = ("gyr_x", "gyr_y", "gyr_z")
IMU_CHANNELS = ACC_CHANNELS + GYR_CHANNELS
REFERENCE_COLUMNS = ("qw", "qx", "qy", "qz")
TIME_COLUMNS = ("t",)
DATE_COLUMNS = ("date", "datetime", "timestamp")      # ISO date-time strings -> t (epoch seconds)
KNOWN_UNITS = {"mag_x": "uT", "mag_y": "uT", "mag_z": "uT"}      # extra channels with a known unit
SCORED_COLUMNS = ("movement", "scored")

ACC_UNITS = {"m/s^2": 1.0, "m/s2": 1.0, "g": STANDARD_GRAVITY}
GYR_UNITS = {"rad/s": 1.0, "deg/s": math.pi / 180.0, "dps": math.pi / 180.0}
ACC_NORM_RANGE = (7.0, 13.0)        # plausible median |acc| in m/s² (mostly at rest or slow motion)
GYR_P99_MAX = 50.0                  # rad/s (≈2900 °/s): beyond common gyro ranges -> likely deg/s
DEFAULT_GAP_S = 0.5
GAP_PERIODS = 5                     # ...but never shorter than this many sample periods

# BROAD: the report-only test split, by leading trial number (see ../shared/data/README.md)


class RecordingError(ValueError):
    """Bad recording. ``str(err)`` is one line: ``path, line N: what is wrong``.

    ``path`` is the file, ``line`` the 1-based line number in it (None where no single line is at
    fault, e.g. in an NPZ file), ``reason`` the message without the location.
    """

    def __init__(self, reason: str, path=None, line: int | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        where = self.path or "<recording>"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {reason}")


class RecordingWarning(UserWarning):
    """A recording was read, but something was dropped or looks off (see `Recording.warnings`)."""


@dataclass
class Recording:
    """One recorded stream, in SI units, sample-aligned with its source file.

    ``x[:, i]`` is channel ``channels[i]`` in unit ``units[i]``. The six IMU channels, when present,
    come first in the order of `IMU_CHANNELS`. ``reference`` is the sensor-to-ENU orientation
    ``[N, 4]`` (w, x, y, z; NaN rows where unknown) or None; ``scored`` the samples a metric counts
    (BROAD's ``movement``) or None for all. ``gaps`` follows the module's gap rule.
    """

    t: np.ndarray
    channels: list[str]
    x: np.ndarray
    units: list[str]
    rate_hz: float
    source: str = ""
    reference: np.ndarray | None = None
    scored: np.ndarray | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.t = np.ascontiguousarray(self.t, dtype=np.float64)
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.channels = list(self.channels)
        self.units = list(self.units)
        n = len(self.t)
        if self.x.ndim != 2 or self.x.shape != (n, len(self.channels)):
            raise ValueError(f"Recording: x has shape {self.x.shape}, expected ({n}, {len(self.channels)})")
        if len(self.units) != len(self.channels):
            raise ValueError("Recording: one unit per channel expected")
        if self.reference is not None:
            self.reference = np.ascontiguousarray(self.reference, dtype=np.float64)
            if self.reference.shape != (n, 4):
                raise ValueError(f"Recording: reference has shape {self.reference.shape}, expected ({n}, 4)")
        if self.scored is not None:
            self.scored = np.ascontiguousarray(self.scored, dtype=bool).reshape(-1)
            if self.scored.shape != (n,):
                raise ValueError(f"Recording: scored has shape {self.scored.shape}, expected ({n},)")
        self.rate_hz = float(self.rate_hz)
        self.gaps = [(int(a), int(b)) for a, b in self.gaps]

    @classmethod
    def from_imu(cls, acc, gyr, *, rate_hz: float, t=None, reference=None, scored=None,
                 source: str = "", gap_s: float = DEFAULT_GAP_S, meta: dict | None = None) -> "Recording":
        """Build a recording from acc ``[N,3]`` (m/s²) and gyr ``[N,3]`` (rad/s) arrays; gaps are found."""
        acc = np.asarray(acc, dtype=np.float64).reshape(-1, 3)
        gyr = np.asarray(gyr, dtype=np.float64).reshape(-1, 3)
        n = len(acc)
        t = np.arange(n) / float(rate_hz) if t is None else np.asarray(t, dtype=np.float64)
        rec = cls(t=t, channels=list(IMU_CHANNELS), x=np.concatenate([acc, gyr], axis=1),
                  units=["m/s^2"] * 3 + ["rad/s"] * 3, rate_hz=rate_hz, source=source,
                  reference=reference, scored=scored, meta=dict(meta or {}))
        rec.meta.setdefault("gap_s", gap_s)
        rec.gaps = find_gaps(rec.t, rec.valid, gap_s)
        return rec

    def __len__(self) -> int:
        return len(self.t)

    @property
    def duration_s(self) -> float:
        return float(self.t[-1] - self.t[0]) if len(self.t) else 0.0

    def index(self, name: str) -> int:
        try:
            return self.channels.index(name)
        except ValueError:
            raise KeyError(f"{self.source or 'recording'} has no channel {name!r} "
                           f"(channels: {', '.join(self.channels)})") from None

    def columns(self, names: Sequence[str]) -> np.ndarray:
        """The named channels as a ``[N, len(names)]`` float32 array (in that order)."""
        return self.x[:, [self.index(n) for n in names]]

    @property
    def acc(self) -> np.ndarray:
        return self.columns(ACC_CHANNELS)

    @property
    def gyr(self) -> np.ndarray:
        return self.columns(GYR_CHANNELS)

    @property
    def valid(self) -> np.ndarray:
        """Samples that are fed to an estimator: finite in every channel it was read for (``channels=``),
        else in every IMU channel present, else in every channel."""
        fed = self.meta.get("fed_channels") or [c for c in IMU_CHANNELS if c in self.channels]
        cols = [self.channels.index(c) for c in fed if c in self.channels]
        block = self.x[:, cols] if cols else self.x
        return np.all(np.isfinite(block), axis=1)


# ------------------------------------------------------------------------------------------ gaps

def default_gap_s(rate_hz: float) -> float:
    """The gap threshold when none is given: 0.5 s, or `GAP_PERIODS` sample periods for slow data."""
    return max(DEFAULT_GAP_S, GAP_PERIODS / rate_hz)


def find_gaps(t, valid, gap_s: float = DEFAULT_GAP_S) -> list[tuple[int, int]]:
    """Gaps by the module's rule: ``(start, end)`` half-open ranges of unfed samples around which
    no sample is fed for longer than ``gap_s`` seconds (``start == end`` for a pure time jump)."""
    t = np.asarray(t, dtype=np.float64)
    fed = np.flatnonzero(np.asarray(valid, dtype=bool))
    n = len(t)
    if n == 0:
        return []
    if fed.size == 0:
        return [(0, n)]
    gaps = []
    if fed[0] > 0 and t[fed[0]] - t[0] > gap_s:
        gaps.append((0, int(fed[0])))
    jumps = np.flatnonzero(np.diff(t[fed]) > gap_s)
    gaps.extend((int(fed[j]) + 1, int(fed[j + 1])) for j in jumps)
    if fed[-1] < n - 1 and t[-1] - t[fed[-1]] > gap_s:
        gaps.append((int(fed[-1]) + 1, n))
    return gaps


# -------------------------------------------------------------------------------------- reading

def read_recording(path, acc_unit: str = "m/s^2", gyr_unit: str = "rad/s", rate_hz: float | None = None,
                   *, gap_s: float | None = None, check_units: bool = True,
                   channels: Sequence[str] | None = None) -> Recording:
    """Read a CSV, NPZ or JSON-lines recording (see the module docstring for formats and rules).

    ``gap_s``: None for the default, `default_gap_s` of the file's rate.
    ``channels``: the channels the reader needs (default: the six IMU channels); they come first in
    ``Recording.channels`` and decide which samples are fed (``Recording.valid``).

    Raises `RecordingError` (a ValueError) with the file and line for anything it cannot accept;
    never another exception type for bad content.
    """
    path = Path(path)
    if acc_unit not in ACC_UNITS:
        raise ValueError(f"acc_unit must be one of {', '.join(ACC_UNITS)}, got {acc_unit!r}")
    if gyr_unit not in GYR_UNITS:
        raise ValueError(f"gyr_unit must be one of {', '.join(GYR_UNITS)}, got {gyr_unit!r}")
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    if gap_s is not None and not (math.isfinite(gap_s) and gap_s > 0):
        raise ValueError(f"gap_s must be a positive number of seconds, got {gap_s!r}")
    if not path.exists():
        raise RecordingError("no such file", path)
    if path.is_dir():
        raise RecordingError("is a directory, not a recording", path)
    required = [str(c).lower() for c in channels] if channels else []
    imu = not required or set(IMU_CHANNELS) <= set(required)
    required = list(IMU_CHANNELS) if imu else required
    name = path.name.lower()
    if name.endswith(".npz"):
        raw = _read_npz(path) if imu else _read_npz_channels(path, required)
    elif name.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")):
        raw = _read_jsonl(path) if imu else _read_jsonl_channels(path, required)
    elif name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
        raw = _read_csv(path, required)
    elif name.endswith(".parquet"):
        raw = _read_parquet(path, required)
    else:
        raise RecordingError("unknown recording format (expected .csv, .csv.gz, .parquet, .npz or .jsonl)", path)
    return _finish(path, raw, ACC_UNITS[acc_unit], GYR_UNITS[gyr_unit], acc_unit, gyr_unit,
                   rate_hz, gap_s, check_units, required if not imu else None)


@dataclass
class _Raw:
    """What a format reader hands to `_finish` (values still in the file's units)."""
    names: list[str]                       # channel names, the required ones (IMU by default) first
    units: list[str]                       # units of the extra channels ("" if unknown); IMU filled later
    x: np.ndarray                          # float64 [N, C]
    t: np.ndarray | None = None
    reference: np.ndarray | None = None
    scored: np.ndarray | None = None
    rate_hz: float | None = None           # from the file (NPZ sampling_rate)
    lines: np.ndarray | None = None        # line number of each sample (text formats)
    warnings: list[str] = field(default_factory=list)


def _read_text(path: Path) -> str:
    try:
        data = gzip.open(path, "rb").read() if path.name.lower().endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as e:
        raise RecordingError(f"cannot read: {e}", path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise RecordingError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", path, line) from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


class _Limited(io.RawIOBase):
    """The first ``limit`` bytes of a binary file from its current position (a truncated last line cut off)."""

    def __init__(self, fh, limit: int):
        self.fh, self.left = fh, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        data = self.fh.read(n) if n > 0 else b""
        b[:len(data)] = data
        self.left -= len(data)
        return len(data)


HEAD_BYTES = 1 << 16
CSV_BLOCK_BYTES = 1 << 20          # pyarrow's parse block: memory per batch, not per file
_CONVERSION = re.compile(r"In CSV column #(\d+): Row #(\d+): CSV conversion error to (\S+): invalid value '(.*)'$",
                         re.S)
_PARSE = re.compile(r"CSV parse error: Row #(\d+): Expected (\d+) columns, got (\d+): (.*)$", re.S)


def _csv_header(path: Path):
    """(header line number, header text, byte offset just after it, delimiter) of a CSV file: the
    first line that is neither blank nor a ``#`` comment, after an optional UTF-8 BOM."""
    try:
        with _open_bytes(path) as fh:
            head = fh.read(HEAD_BYTES)
            while b"\n" not in head.lstrip(b"\xef\xbb\xbf \t\r\n") or _only_comments(head):
                more = fh.read(HEAD_BYTES)
                if not more:
                    break
                head += more
    except (OSError, EOFError) as e:
        raise RecordingError(f"cannot read: {e}", path) from None
    pos = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    line = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        end = len(head) if end < 0 else end
        line += 1
        raw = head[pos:end]
        pos = end + 1
        try:
            text = raw.decode("utf-8").strip(" \r")
        except UnicodeDecodeError as e:
            raise RecordingError(f"not UTF-8 text (byte 0x{raw[e.start]:02x})", path, line) from None
        if text.strip() and not text.startswith("#"):
            if path.name.lower().endswith(".tsv") or "\t" in text:
                delimiter = "\t"
            elif ";" in text and "," not in text:
                delimiter = ";"
            else:
                delimiter = ","
            return line, text, min(pos, len(head)), delimiter, pos >= len(head) and not head.endswith(b"\n")
    raise RecordingError("empty file: no header and no data", path)


def _only_comments(head: bytes) -> bool:
    lines = head.split(b"\n")
    return all(not s.strip() or s.lstrip(b"\xef\xbb\xbf").startswith(b"#") for s in lines[:-1])


def _cut_last_line(path: Path, offset: int, delimiter: str, ncol: int, date_col) -> int | None:
    """Bytes after ``offset`` to read when the file ends without a newline in a cell that is not a
    number (a recorder stopped mid-write), else None."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(offset, size - HEAD_BYTES))
        tail = fh.read()
    if not tail or tail.endswith(b"\n") or b"\n" not in tail:
        return None
    cells = tail[tail.rfind(b"\n") + 1:].decode("utf-8", "replace").strip("\r").split(delimiter)
    if len(cells) != ncol:
        return None          # a short last line: the field-count rule handles it
    for k, c in enumerate(cells):
        c = c.strip().strip('"')
        if k != date_col and c and not _is_number(c):
            return size - (len(tail) - tail.rfind(b"\n") - 1) - offset
    return None


def _count_lines(path: Path, offset: int, limit: int) -> int:
    with open(path, "rb") as fh:
        fh.seek(offset)
        n, left = 0, limit
        while left > 0 and (block := fh.read(min(left, 1 << 22))):
            n += block.count(b"\n")
            left -= len(block)
    return n


def _check_columns(path, names: list[str], required: list[str], header_line):
    """The column rules of a table (CSV header, Parquet schema): returns (date column or None, reference columns)."""
    if all(_is_number(h) for h in names):
        raise RecordingError(
            "no header: the first line must name the columns (acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z[,t][,qw,qx,qy,qz])",
            path, header_line)
    for k, h in enumerate(names):
        if not h:
            raise RecordingError(f"empty column name (column {k + 1})", path, header_line)
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise RecordingError(f"duplicate column(s): {', '.join(dupes)}", path, header_line)
    missing = [c for c in required if c not in names]
    if missing:
        raise RecordingError(f"missing column(s): {', '.join(missing)} (header has: {', '.join(names)})",
                             path, header_line)
    date_col = next((k for k, h in enumerate(names) if h in DATE_COLUMNS), None)
    if date_col is not None and "t" in names:
        raise RecordingError(f"both 't' and {names[date_col]!r} columns: which one is the time?", path, header_line)
    has_ref = [c for c in REFERENCE_COLUMNS if c in names]
    if has_ref and len(has_ref) < 4:
        miss = [c for c in REFERENCE_COLUMNS if c not in names]
        raise RecordingError(f"incomplete reference: has {', '.join(has_ref)} but missing {', '.join(miss)}",
                             path, header_line)
    return date_col, has_ref


def _read_csv(path: Path, required: list[str]) -> _Raw:
    """CSV through pyarrow's streaming reader (quoting, CRLF, a BOM, ``,`` ``;`` or tab, gzip), in
    blocks of `CSV_BLOCK_BYTES`, with the module's rules and line numbers for every refusal."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header_line, header, offset, delimiter, header_is_last = _csv_header(path)
    names = [h.strip().strip('"').strip("'").strip().lower() for h in header.split(delimiter)]
    date_col, has_ref = _check_columns(path, names, required, header_line)
    ncol = len(names)
    types = {n: (pa.timestamp("ms") if k == date_col else pa.float64()) for k, n in enumerate(names)}

    def batches(fh, limit=None):
        """(row batches, the rows pyarrow skipped as (row, fields, text)); rows count from the header."""
        skipped = []

        def on_invalid(row):
            skipped.append((row.number, row.actual_columns, row.text))
            return "skip"

        fh.seek(offset)
        src = pa.PythonFile(io.BufferedReader(_Limited(fh, limit)) if limit is not None else fh, mode="r")
        reader = pacsv.open_csv(
            src, read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=False,
                                                 quoted_strings_can_be_null=True))
        return reader, skipped

    def last_row():
        """(rows after the header, whether the file ends with a newline, bytes up to the last newline)."""
        with _open_bytes(path) as fh:
            fh.seek(offset)
            rows, size, tail = 0, 0, b""
            while block := fh.read(1 << 22):
                rows += block.count(b"\n")
                size += len(block)
                tail = (tail + block)[-(1 << 16):]
        ends = tail.endswith(b"\n")
        body = size - (len(tail) - tail.rfind(b"\n") - 1) if not ends else size
        return rows + (0 if ends or not tail else 1), ends, body

    warn: list[str] = []
    ignored: set[str] = set()          # extra columns holding text (labels, notes): not read, listed in a warning
    read_columns = set(required) | set(REFERENCE_COLUMNS) | set(TIME_COLUMNS) | set(SCORED_COLUMNS)
    k_date = -1 if date_col is None else date_col
    limit = None
    if not path.name.lower().endswith(".gz"):     # a last line cut mid-number that pyarrow would still read
        limit = _cut_last_line(path, offset, delimiter, ncol, date_col)
        if limit is not None:
            warn.append(f"{path}, line {header_line + _count_lines(path, offset, limit) + 1}: "
                        f"truncated last line (incomplete number) dropped")
    if header_is_last:
        raise RecordingError("header only, no data lines", path, header_line)
    while True:
        parts, skipped, fh = [], [], None
        try:
            fh = _open_bytes(path)
            reader, skipped = batches(fh, limit)
            for b in reader:
                parts.append(b)
            break
        except pa.ArrowInvalid as e:
            m = _CONVERSION.match(str(e))
            if m is None and "Empty CSV file" in str(e):
                raise RecordingError("header only, no data lines", path, header_line) from None
            bad_row = _PARSE.match(str(e))
            if m is None and bad_row:       # pyarrow could not hand the row over: it is not text
                got, text = int(bad_row[3]), bad_row[4]
                what = ("not UTF-8 text" if not text.isprintable() else
                        f"{got} fields, but the header names {ncol} columns")
                raise RecordingError(what, path, header_line + int(bad_row[1])) from None
            if m is None:
                raise RecordingError(f"not a readable CSV file ({str(e).splitlines()[0]})", path) from None
            col, row, kind, value = int(m[1]), int(m[2]), m[3], m[4]
            rows, ends, body = last_row()
            if limit is None and row == rows and not ends and row > 1:
                warn.append(f"{path}, line {header_line + row}: truncated last line (incomplete number) dropped")
                limit = body - offset
                continue
            if k_date != col and names[col] not in read_columns:     # text in a column nobody reads: leave it out
                ignored.add(names[col])
                types[names[col]] = pa.string()
                continue
            what = "an ISO date-time (e.g. 2016-07-01 00:00:00)" if kind.startswith("timestamp") else "a number"
            where = "" if kind.startswith("timestamp") else f"column {names[col]}: "
            raise RecordingError(f"{where}{value!r} is not {what}", path, header_line + row) from None
        except (OSError, EOFError) as e:
            raise RecordingError(f"cannot read: {e}", path) from None
        finally:
            if fh is not None:
                fh.close()
    table = pa.Table.from_batches(parts, schema=reader.schema) if parts else None
    total = (0 if table is None else table.num_rows) + len(skipped)
    real = [(r, f, txt) for r, f, txt in skipped if txt.strip() and not txt.lstrip().startswith("#")]
    if real:
        r, f, _ = real[-1]
        if len(real) == 1 and r == total and f < ncol and limit is None:
            warn.append(f"{path}, line {header_line + r}: truncated last line ({f} of {ncol} fields) dropped")
            real = []
        if real:
            r, f, _ = real[0]
            raise RecordingError(f"{f} fields, but the header names {ncol} columns", path, header_line + r)
    if table is None or table.num_rows == 0:
        if not skipped:
            raise RecordingError("header only, no data lines", path, header_line)
        raise RecordingError("no complete data line", path)
    rows_of_table = np.setdiff1d(np.arange(1, total + 1), [r for r, _, _ in skipped], assume_unique=True)
    cols = []
    if ignored:
        warn.append(f"{path}: ignored non-numeric column(s) {', '.join(n for n in names if n in ignored)} (not read)")
    for k, n in enumerate(names):
        if n in ignored:
            continue
        c = table.column(k)
        if k == date_col:
            cols.append(c.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e3)
        else:
            cols.append(c.to_numpy(zero_copy_only=False).astype(np.float64, copy=False))
    values = np.stack(cols, axis=1) if cols else np.empty((table.num_rows, 0))
    blank = np.all(np.isnan(values), axis=1)        # an empty line reads as a row of nulls
    if blank.any():
        values, rows_of_table = values[~blank], rows_of_table[~blank]
    if not len(values):
        raise RecordingError("header only, no data lines", path, header_line)
    lines = header_line + rows_of_table.astype(np.int64)

    return _table_to_raw(names, values, lines, required, date_col, has_ref, warn, ignored)


def _table_to_raw(names, values, lines, required, date_col, has_ref, warn, ignored=frozenset()) -> _Raw:
    """Columns of a table (float64 [N, len(names)], the date column in epoch seconds) to a `_Raw`;
    ``ignored``: text columns left out of ``values`` (their names are still in ``names``)."""
    dates = None
    if ignored:
        date_col = None if date_col is None else [n for n in names if n not in ignored].index(names[date_col])
        names = [n for n in names if n not in ignored]
    if date_col is not None:
        dates = values[:, date_col]
        values = np.delete(values, date_col, axis=1)
        names = names[:date_col] + names[date_col + 1:]
    col = {n: i for i, n in enumerate(names)}
    special = set(required) | set(REFERENCE_COLUMNS) | set(TIME_COLUMNS) | set(SCORED_COLUMNS)
    extras = [n for n in names if n not in special]
    out_names = list(required) + extras
    x = values[:, [col[n] for n in out_names]]
    t = values[:, col["t"]] if "t" in col else None
    if dates is not None:
        t = dates
    ref = values[:, [col[c] for c in REFERENCE_COLUMNS]] if has_ref else None
    scored = None
    for c in SCORED_COLUMNS:
        if c in col:
            v = values[:, col[c]]
            scored = np.isfinite(v) & (v != 0)
            break
    return _Raw(names=out_names, units=[KNOWN_UNITS.get(n, "") for n in extras], x=x, t=t, reference=ref,
                scored=scored, lines=lines, warnings=warn)


def _read_parquet(path: Path, required: list[str]) -> _Raw:
    """Parquet, row group by row group (pyarrow): the CSV column rules; a timestamp column is ``t``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise RecordingError(f"not a readable Parquet file ({str(e).splitlines()[0]})", path) from None
    names = [str(n).lower() for n in pf.schema_arrow.names]
    date_col, has_ref = _check_columns(path, names, required, None)
    for k, field in enumerate(pf.schema_arrow):
        ok = pa.types.is_timestamp(field.type) if k == date_col else (
            pa.types.is_floating(field.type) or pa.types.is_integer(field.type) or pa.types.is_boolean(field.type))
        if not ok:
            raise RecordingError(f"column {names[k]} has type {field.type}, expected numbers"
                                 + (" (a timestamp)" if k == date_col else ""), path)
    parts = []
    try:
        for batch in pf.iter_batches(batch_size=1 << 16):
            cols = []
            for k in range(batch.num_columns):
                c = batch.column(k)
                if k == date_col:
                    c = c.cast(pa.timestamp("ms")).cast(pa.int64())
                    cols.append(c.to_numpy(zero_copy_only=False).astype(np.float64) / 1e3)
                else:
                    cols.append(c.cast(pa.float64()).to_numpy(zero_copy_only=False))
            parts.append(np.stack(cols, axis=1))
    except (OSError, pa.ArrowException) as e:
        raise RecordingError(f"not a readable Parquet file ({str(e).splitlines()[0]})", path) from None
    values = np.concatenate(parts) if parts else np.empty((0, len(names)))
    if not len(values):
        raise RecordingError("no rows", path)
    return _table_to_raw(names, values, None, required, date_col, has_ref, [])


def _json_objects(path: Path):
    """The lines of a JSON-lines file as objects: (rows [(line, text)], objects, warnings), by the
    truncated-last-line rule."""
    text = _read_text(path)
    rows = [(i + 1, s.strip()) for i, s in enumerate(text.split("\n")) if s.strip()]
    if not rows:
        raise RecordingError("empty file", path)
    warn: list[str] = []
    objs = []
    for k, (ln, s) in enumerate(rows):
        try:
            o = json.loads(s)
        except json.JSONDecodeError as e:
            if k == len(rows) - 1 and k > 0:
                warn.append(f"{path}, line {ln}: truncated last line (not a complete JSON object) dropped")
                break
            raise RecordingError(f"not valid JSON ({e.msg} at column {e.colno})", path, ln) from None
        if not isinstance(o, dict):
            raise RecordingError(f"expected a JSON object per line, got {type(o).__name__}", path, ln)
        objs.append(o)
    return rows[:len(objs)], objs, warn


def _read_jsonl(path: Path) -> _Raw:
    rows, objs, warn = _json_objects(path)
    first_ln, first = rows[0][0], objs[0]
    missing = [k for k in ("acc", "gyr") if k not in first]
    if missing:
        raise RecordingError(f"missing key(s): {', '.join(missing)} (line has: {', '.join(first) or 'none'})",
                             path, first_ln)
    has_t = "t" in first
    ref_key = next((k for k in ("quat", "q") if k in first), None)
    scored_key = next((k for k in SCORED_COLUMNS if k in first), None)
    special = {"t", "acc", "gyr", "quat", "q", *SCORED_COLUMNS}
    extras = [k for k, v in first.items()
              if k not in special and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))]

    n = len(objs)
    x = np.empty((n, 6 + len(extras)), dtype=np.float64)
    t = np.empty(n) if has_t else None
    ref = np.empty((n, 4)) if ref_key else None
    scored = np.zeros(n, dtype=bool) if scored_key else None

    def vec(o, key, size, ln):
        v = o.get(key)
        if not isinstance(v, list) or len(v) != size:
            raise RecordingError(f"{key!r} must be a list of {size} numbers, got {json.dumps(v)[:60]}", path, ln)
        return [_num(e, key, ln) for e in v]

    def _num(e, key, ln):
        if e is None:
            return math.nan
        if isinstance(e, bool) or not isinstance(e, (int, float)):
            raise RecordingError(f"{key!r}: {json.dumps(e)[:40]} is not a number", path, ln)
        return float(e)

    for r, ((ln, _), o) in enumerate(zip(rows, objs)):
        for key in ("acc", "gyr"):
            if key not in o:
                raise RecordingError(f"missing key {key!r}", path, ln)
        x[r, 0:3] = vec(o, "acc", 3, ln)
        x[r, 3:6] = vec(o, "gyr", 3, ln)
        for j, key in enumerate(extras):
            x[r, 6 + j] = _num(o.get(key), key, ln)
        if has_t:
            if "t" not in o:
                raise RecordingError("missing key 't' (earlier lines have it)", path, ln)
            t[r] = _num(o["t"], "t", ln)
        if ref_key:
            q = o.get(ref_key)
            ref[r] = [math.nan] * 4 if q is None else vec(o, ref_key, 4, ln)
        if scored_key:
            scored[r] = bool(o.get(scored_key))
    lines = np.fromiter((ln for ln, _ in rows), dtype=np.int64, count=n)
    return _Raw(names=list(IMU_CHANNELS) + extras, units=[KNOWN_UNITS.get(n, "") for n in extras], x=x, t=t,
                reference=ref,
                scored=scored, lines=lines, warnings=warn)


def _read_jsonl_channels(path: Path, required: list[str]) -> _Raw:
    """JSON lines of another sensor: one object per line with a number (or null) per channel."""
    rows, objs, warn = _json_objects(path)
    objs = [{str(key).lower(): v for key, v in o.items()} for o in objs]
    first = objs[0]
    missing = [c for c in required if c not in first]
    if missing:
        raise RecordingError(f"missing key(s): {', '.join(missing)} (line has: {', '.join(first) or 'none'})",
                             path, rows[0][0])
    numeric = lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    special = set(required) | {"t", *SCORED_COLUMNS}
    names = required + [key for key, v in first.items() if key not in special and numeric(v)]
    keys = names + (["t"] if "t" in first else [])
    values = np.empty((len(objs), len(keys)), dtype=np.float64)
    for r, ((ln, _), o) in enumerate(zip(rows, objs)):
        for j, key in enumerate(keys):
            if key not in o:
                raise RecordingError(f"missing key {key!r} (earlier lines have it)", path, ln)
            v = o[key]
            if not numeric(v):
                raise RecordingError(f"{key!r}: {json.dumps(v)[:40]} is not a number", path, ln)
            values[r, j] = math.nan if v is None else float(v)
    scored_key = next((k for k in SCORED_COLUMNS if k in first), None)
    scored = np.array([bool(o.get(scored_key)) for o in objs]) if scored_key else None
    lines = np.fromiter((ln for ln, _ in rows), dtype=np.int64, count=len(rows))
    return _Raw(names=names, units=[KNOWN_UNITS.get(n, "") for n in names[len(required):]],
                x=values[:, :len(names)], t=values[:, -1] if "t" in first else None, scored=scored, lines=lines,
                warnings=warn)


def _read_npz_channels(path: Path, required: list[str]) -> _Raw:
    """NPZ of another sensor: a 1-D array per channel, optional ``t`` and ``sampling_rate``."""
    d = _load_npz(path)
    missing = [c for c in required if c not in d]
    if missing:
        raise RecordingError(f"missing key(s): {', '.join(missing)} (file has: {', '.join(sorted(d)) or 'none'})",
                             path)
    cols = {}
    for key in [*required, *(["t"] if "t" in d else [])]:
        a = d[key]
        if a.ndim != 1 or a.dtype.kind not in "biuf":
            raise RecordingError(f"key {key!r} must be a 1-D numeric array, got {a.dtype} {a.shape}", path)
        cols[key] = a.astype(np.float64)
    if len({len(a) for a in cols.values()}) > 1:
        raise RecordingError("arrays differ in length: " + ", ".join(f"{k} {len(a)}" for k, a in cols.items()), path)
    return _Raw(names=list(required), units=[], x=np.stack([cols[c] for c in required], axis=1),
                t=cols.get("t"), rate_hz=_npz_rate(path, d))


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # a corrupt zip, a pickled array, ...: one clear line, no traceback
        raise RecordingError(f"not a readable .npz file ({type(e).__name__}: {e})", path) from None


def _npz_rate(path: Path, d: dict) -> float | None:
    if "sampling_rate" not in d:
        return None
    try:
        rate = float(np.asarray(d["sampling_rate"]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise RecordingError("key 'sampling_rate' is not a number", path) from None
    if not (math.isfinite(rate) and rate > 0):
        raise RecordingError(f"sampling_rate is {rate}, expected a positive number of Hz", path)
    return rate


def _read_npz(path: Path) -> _Raw:
    d = _load_npz(path)
    missing = [k for k in ("acc", "gyr") if k not in d]
    if missing:
        raise RecordingError(f"missing key(s): {', '.join(missing)} (file has: {', '.join(sorted(d)) or 'none'})",
                             path)

    def arr(key, cols):
        try:
            a = np.asarray(d[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise RecordingError(f"key {key!r} is not numeric (dtype {d[key].dtype})", path) from None
        if cols is None:
            return a.reshape(-1)
        if a.ndim != 2 or a.shape[1] != cols:
            raise RecordingError(f"key {key!r} has shape {a.shape}, expected (N, {cols})", path)
        return a

    acc, gyr = arr("acc", 3), arr("gyr", 3)
    n = len(acc)
    shapes = {"acc": n, "gyr": len(gyr)}
    names, units, cols = list(IMU_CHANNELS), [], [acc, gyr]
    if "mag" in d:
        mag = arr("mag", 3)
        shapes["mag"] = len(mag)
        names += ["mag_x", "mag_y", "mag_z"]
        units += ["uT"] * 3
        cols.append(mag)
    ref = None
    if "quat" in d:
        ref = arr("quat", 4)
        shapes["quat"] = len(ref)
    scored = None
    if "movement" in d:
        scored = np.asarray(d["movement"]).reshape(-1)
        shapes["movement"] = len(scored)
        scored = np.isfinite(scored.astype(np.float64)) & (scored.astype(np.float64) != 0)
    t = None
    if "t" in d:
        t = arr("t", None)
        shapes["t"] = len(t)
    if len(set(shapes.values())) > 1:
        raise RecordingError("arrays differ in length: " + ", ".join(f"{k} {v}" for k, v in shapes.items()), path)
    return _Raw(names=names, units=units, x=np.concatenate(cols, axis=1), t=t, reference=ref,
                scored=scored, rate_hz=_npz_rate(path, d))


def _where(path, lines, k) -> dict:
    """Location kwargs for sample ``k``: its line (text formats) or nothing (NPZ)."""
    return {"path": path, "line": None if lines is None else int(lines[k])}


def _sample_label(lines, k) -> str:
    return "" if lines is not None else f"sample {k}: "


def _finish(path, raw: _Raw, acc_scale, gyr_scale, acc_unit, gyr_unit, rate_hz, gap_s, check_units,
            other: list[str] | None) -> Recording:
    """Time, units, reference, non-finite samples and gaps. ``other``: the required channels of a
    recording that is not an IMU one (None for IMU)."""
    n = len(raw.x)
    warn = list(raw.warnings)
    lines = raw.lines
    if n == 0:
        raise RecordingError("no samples", path)

    # --- time
    if raw.t is not None:
        t = raw.t
        nonfinite = np.flatnonzero(~np.isfinite(t))
        if nonfinite.size:
            k = int(nonfinite[0])
            raise RecordingError(f"{_sample_label(lines, k)}t is {float(t[k])} (time must be a finite number of seconds)",
                                 **_where(path, lines, k))
        dt = np.diff(t)
        back = np.flatnonzero(dt <= 0)
        if back.size:
            k = int(back[0]) + 1
            what = "repeats" if dt[k - 1] == 0 else "goes backwards"
            prev = "" if lines is None else f" on line {lines[k - 1]}"
            raise RecordingError(f"{_sample_label(lines, k)}t {what}: {float(t[k])!r} after {float(t[k - 1])!r}{prev}",
                                 **_where(path, lines, k))
        measured = 1.0 / float(np.median(dt)) if n > 1 else None
        if rate_hz is None:
            rate_hz = measured if measured is not None else raw.rate_hz
            if rate_hz is None:
                raise RecordingError("a single sample and no rate: pass rate_hz (--rate-hz)", path)
        elif measured is not None and abs(measured / rate_hz - 1.0) > 0.01:
            warn.append(f"{path}: rate_hz={rate_hz:g} given, but the t column says {measured:.6g} Hz "
                        f"(median Δt); t is used for timing, {rate_hz:g} Hz as the nominal rate")
    else:
        if rate_hz is None:
            rate_hz = raw.rate_hz
        elif raw.rate_hz is not None and abs(raw.rate_hz / rate_hz - 1.0) > 1e-6:
            warn.append(f"{path}: rate_hz={rate_hz:g} overrides the file's sampling_rate {raw.rate_hz:g}")
        if rate_hz is None:
            raise RecordingError("no 't' column and no sampling rate in the file: pass rate_hz (--rate-hz)", path)
        t = np.arange(n, dtype=np.float64) / rate_hz
    if gap_s is None:
        gap_s = default_gap_s(rate_hz)

    # --- units
    x = raw.x.copy()
    fed = len(other) if other else 6
    if not other:
        x[:, 0:3] *= acc_scale
        x[:, 3:6] *= gyr_scale
    valid = np.all(np.isfinite(x[:, :fed]), axis=1)
    what = ", ".join(other) if other else "acc_x..gyr_z"
    if not valid.any():
        raise RecordingError(f"no sample has finite values in all of {what}", path)
    if check_units and not other:
        _check_units(path, x, valid, lines, acc_unit, gyr_unit, rate_hz)

    # --- reference
    ref = None
    if raw.reference is not None:
        q = raw.reference
        rows_ok = np.all(np.isfinite(q), axis=1)
        ref = np.full_like(q, np.nan)
        ref[rows_ok] = quat_normalize(q[rows_ok])        # zero rows become NaN
        norms = np.linalg.norm(q[rows_ok], axis=1)
        far = np.flatnonzero(np.abs(norms - 1.0) > 0.05)
        if far.size:
            k = int(np.flatnonzero(rows_ok)[far[0]])
            loc = f"line {lines[k]}" if lines is not None else f"sample {k}"
            warn.append(f"{path}: {far.size} reference quaternions are far from unit norm "
                        f"(first at {loc}, |q| = {norms[far[0]]:.3g}); normalised")

    # --- non-finite samples and gaps
    bad = np.flatnonzero(~valid)
    if bad.size:
        loc = f"line {lines[bad[0]]}" if lines is not None else f"sample {bad[0]}"
        warn.append(f"{path}: {bad.size} sample(s) with NaN/Inf in {what} are skipped, not fed (first at {loc})")
    gaps = find_gaps(t, valid, gap_s)
    def span(s, e):          # the unfed samples s..e-1, by line where there are lines
        if lines is None:
            return f"samples {s}-{e - 1}" if e - s > 1 else f"sample {s}"
        return f"lines {lines[s]}-{lines[e - 1]}" if e - s > 1 else f"line {lines[s]}"

    for s, e in gaps:
        a = t[s - 1] if s > 0 else t[0]
        b = t[e] if e < n else t[-1]
        at = (f"line {lines[e]}" if lines is not None else f"sample {e}") if e < n else ""
        if s == e:
            warn.append(f"{path}: t jumps by {b - a:.3g} s before {at}; the state resets there")
        elif e < n:
            warn.append(f"{path}: gap of {b - a:.3g} s with no usable sample ({span(s, e)}); "
                        f"the state resets at {at}")
        else:
            warn.append(f"{path}: no usable sample in the last {b - a:.3g} s ({span(s, e)})")

    for w in warn:
        warnings.warn(w, RecordingWarning, stacklevel=3)
    units = ([""] * len(other) if other else ["m/s^2"] * 3 + ["rad/s"] * 3) + list(raw.units)
    meta = {"gap_s": gap_s} if other else {"gap_s": gap_s, "acc_unit_in_file": acc_unit, "gyr_unit_in_file": gyr_unit}
    if other:
        meta["fed_channels"] = list(other)
    return Recording(t=t, channels=raw.names, x=x, units=units, rate_hz=rate_hz, source=str(path),
                     reference=ref, scored=raw.scored, gaps=gaps, warnings=warn, meta=meta)


def _check_units(path, x, valid, lines, acc_unit, gyr_unit, rate_hz):
    norms = np.linalg.norm(x[valid, 0:3], axis=1)
    med = float(np.median(norms))
    lo, hi = ACC_NORM_RANGE
    if not lo <= med <= hi:
        idx = np.flatnonzero(valid)
        off = np.flatnonzero((norms < lo) | (norms > hi))
        k = int(idx[off[0]]) if off.size else int(idx[0])
        if acc_unit != "g" and 0.7 <= med <= 1.3:
            hint = "the accelerometer looks like it is in g: use --acc-unit g (acc_unit='g')"
        elif acc_unit == "g" and 70 <= med <= 130:
            hint = "the accelerometer looks like it is already in m/s²: drop --acc-unit g (acc_unit='m/s^2')"
        else:
            hint = "check the accelerometer unit (--acc-unit m/s^2 or g) and the column order"
        raise RecordingError(f"median |acc| over the file is {med:.3g} m/s² after reading it as {acc_unit} "
                             f"(expected about {STANDARD_GRAVITY:.2f}, between {lo:g} and {hi:g}); {hint}", **_where(path, lines, k))
    gnorm = np.linalg.norm(x[valid, 3:6], axis=1)
    p99 = float(np.percentile(gnorm, 99))
    if p99 > GYR_P99_MAX:
        idx = np.flatnonzero(valid)
        k = int(idx[np.flatnonzero(gnorm > GYR_P99_MAX)[0]])
        hint = ("the gyroscope looks like it is in deg/s: use --gyr-unit deg/s (gyr_unit='deg/s')"
                if gyr_unit == "rad/s" else "check the gyroscope unit")
        raise RecordingError(f"99th percentile of |gyr| is {p99:.3g} rad/s after reading it as {gyr_unit} "
                             f"(above {GYR_P99_MAX:g} rad/s is beyond any common gyroscope range); {hint}",
                             **_where(path, lines, k))
    ratio, windows = gyro_rate_ratio(x[:, 0:3], x[:, 3:6], rate_hz, valid)   # the gyro against the acc's turns
    if ratio is not None and not GYR_RATIO_LOW <= ratio <= GYR_RATIO_HIGH:
        if ratio > GYR_RATIO_HIGH:
            fix = ("the file looks like rad/s: drop --gyr-unit deg/s (gyr_unit='rad/s')" if gyr_unit != "rad/s"
                   else "check the gyroscope unit and the column order")
        else:
            fix = ("the file looks like deg/s: use --gyr-unit deg/s (gyr_unit='deg/s')" if gyr_unit == "rad/s"
                   else "check the gyroscope unit and the column order")
        raise RecordingError(f"the accelerometer's direction turns {ratio:.3g}× as fast as the gyroscope read as "
                             f"{gyr_unit} says (median over {windows} moments of motion; about 1 when the unit is "
                             f"right, 57.3 apart for rad/s vs deg/s); {fix}", path)


# ------------------------------------------------------------------------------------ resampling

def resample(rec: Recording, rate_hz: float) -> Recording:
    """Resample to a uniform ``rate_hz`` grid from ``t[0]`` with the one resampler
    (`edge.io.resample.StreamResampler`, pushed the whole recording): channels by linear
    interpolation, the reference by slerp (shortest arc) between the same two samples, ``scored`` by
    nearest neighbour. O(samples).

    No anti-alias filter is applied (linear interpolation of point samples, like a sensor that
    simply samples slower). Samples that fall inside a gap of the source, or next to a non-finite
    source sample, come out NaN; gaps are recomputed on the new grid with the same ``gap_s``.
    """
    from edge.io.resample import StreamResampler
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    n = len(rec)
    if n < 2:
        raise ValueError("resample needs at least two samples")
    gap_s = rec.meta.get("gap_s", DEFAULT_GAP_S)
    valid = rec.valid
    rs = StreamResampler(rate_hz, gap_s)
    _, tn, x, _, _, _ = rs.push(rec.t, rec.x, fed=valid)
    i, f, _ = rs.neighbours                           # grid point r lies between samples i[r] and i[r] + 1
    x = x.astype(np.float64)

    # inside a gap of the source (no fed sample for longer than gap_s around it): blank every column
    t = rec.t
    idx = np.arange(n)
    last_fed = np.maximum.accumulate(np.where(valid, idx, -1))
    next_fed = np.minimum.accumulate(np.where(valid, idx, n)[::-1])[::-1]
    a = np.where(last_fed[i] >= 0, t[np.maximum(last_fed[i], 0)], -np.inf)
    nxt = next_fed[np.minimum(i + 1, n - 1)]
    b = np.where(nxt < n, t[np.minimum(nxt, n - 1)], np.inf)
    inside = (tn > a) & (tn < b) & (b - a > gap_s)
    x[inside] = np.nan
    ref = None
    if rec.reference is not None:
        q0, q1 = rec.reference[i], rec.reference[i + 1]
        ref = np.where((f <= 0.0)[:, None], q0, np.where((f >= 1.0)[:, None], q1, quat_slerp(q0, q1, f)))
        ref[inside] = np.nan
    scored = None
    if rec.scored is not None:
        scored = rec.scored[np.where(f < 0.5, i, i + 1)]
    meta = {k: v for k, v in rec.meta.items()        # per-sample arrays of the old grid would be stale
            if not (isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n)}
    out = Recording(t=tn, channels=rec.channels, x=x, units=rec.units, rate_hz=rate_hz, source=rec.source,
                    reference=ref, scored=scored, warnings=list(rec.warnings),
                    meta={**meta, "resampled_from_hz": rec.rate_hz})
    out.gaps = find_gaps(out.t, out.valid, gap_s)
    return out


# --------------------------------------------------------------------------------------- writing

def write_recording_csv(rec: Recording, path, *, comment: str | None = None,
                        include_reference: bool = True) -> Path:
    """Write ``rec`` as a CSV that `read_recording` reads back (SI units, header, ``t`` column).

    Columns: ``t``, the channels, then ``qw,qx,qy,qz`` and ``movement`` when present. ``comment``
    lines (e.g. an attribution) are written first, each prefixed with ``# ``. ``.csv.gz`` is
    gzipped. The file is written atomically (`edge.io.atomic`): a reader never sees half a file.
    """
    path = Path(path)
    cols = [rec.t[:, None], rec.x.astype(np.float64)]
    header = ["t"] + list(rec.channels)
    fmt = ["%.9f"] + ["%.9g"] * len(rec.channels)
    if include_reference and rec.reference is not None:
        cols.append(rec.reference)
        header += list(REFERENCE_COLUMNS)
        fmt += ["%.9g"] * 4
    if rec.scored is not None:
        cols.append(rec.scored[:, None].astype(np.float64))
        header.append("movement")
        fmt.append("%d")
    table = np.concatenate(cols, axis=1)
    buf = io.StringIO()
    if comment:
        for line in comment.splitlines():
            buf.write(f"# {line}\n".replace("# \n", "#\n"))
    buf.write(",".join(header) + "\n")
    np.savetxt(buf, table, fmt=fmt, delimiter=",")
    data = buf.getvalue().encode("utf-8")
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, data)
