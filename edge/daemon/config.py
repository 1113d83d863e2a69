"""The daemon's configuration: a TOML file (stdlib `tomllib`) read into frozen dataclasses.

Every problem is one `ConfigError` line that names the file and the key (`pipeline[0].qos: ...`).
`--set key=value` overrides any key after the file is read; the value is parsed as a TOML value
when it parses (`broker.port=1884`, `state.interval_s=0.5`, `output.every=2`) and taken as a
string otherwise (`broker.host=10.0.0.2`). Keys of the pipeline list are addressed by index
(`pipeline.0.bundle=my.onnx`). docs/daemon.md is the reference of every key.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("json", "binary", "auto")
OUTPUT_FORMATS = ("json", "binary")
ENGINES = ("auto", "numba", "onnxruntime")          # edge.runtime.ENGINES (no numpy import here)
DEVICE = "{device}"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "edge-daemon"
    keepalive_s: int = 30
    username: str = ""
    password_file: str = ""          # the password is read from this file (first line), never from the config
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    session_expiry_s: int = 3600      # how long the broker keeps our session (and queues QoS 1) while we are away
    receive_maximum: int = 1000       # QoS 1 in flight unacknowledged, each way (broker -> us, our outputs -> broker)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class Pipeline:
    name: str = "imu"
    topic: str = "sensors/{device}/imu"    # {device}: one whole topic level, the stream id
    format: str = "auto"                   # json | binary | auto (binary when it starts with the frame magic)
    qos: int = 1
    bundle: str = "imu-attitude"
    engine: str = "auto"
    output_topic: str = "attitude/{device}"
    output_qos: int = 1
    output_format: str = "json"
    every: int = 1                         # publish every N-th output of a device (decimation)
    max_streams: int = 1024                # devices with live state; see limits / docs for who is refused
    gap_s: float = 0.5                     # no fed sample for longer than this: state reset (edge.io.recordings)


@dataclass(frozen=True)
class State:
    dir: str = ""                    # checkpoints (<pipeline>.state.npz) and evicted streams; "" = no persistence
    interval_s: float = 5.0          # checkpoint at least this often (and when half the ack window is used)
    idle_evict_s: float = 600.0      # a device silent this long may give its slot to a new one (>= gap_s)


@dataclass(frozen=True)
class Limits:
    queue_messages: int = 20000            # messages between the network thread and the worker
    max_payload_bytes: int = 262144
    max_samples_per_message: int = 4096
    batch_messages: int = 4096             # messages the worker takes per engine round
    output_queue: int = 20000              # QoS>0 results paho may hold (in flight + queued)
    output_wait_s: float = 10.0            # how long the worker waits for room in that queue before dropping


@dataclass(frozen=True)
class Metrics:
    bind: str = "127.0.0.1"
    port: int = 9108                       # 0: no HTTP endpoint
    stats_topic: str = "edge/{client_id}/stats"   # "" = no stats message
    stats_interval_s: float = 10.0
    log_every_s: float = 5.0               # at most one log line per drop reason per this many seconds


@dataclass(frozen=True)
class Config:
    broker: Broker = field(default_factory=Broker)
    pipelines: tuple = (Pipeline(),)
    state: State = field(default_factory=State)
    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    source: str = "<defaults>"

    def password(self) -> str | None:
        if not self.broker.password_file:
            return None
        try:
            return Path(self.broker.password_file).read_text().splitlines()[0]
        except (OSError, IndexError) as e:
            raise ConfigError(f"{self.source}: broker.password_file {self.broker.password_file}: cannot read a "
                              f"password line ({e.__class__.__name__})") from None


# ---------------------------------------------------------------------------------- overrides

def parse_override(text: str) -> tuple[list[str], object]:
    """'broker.port=1884' -> (['broker', 'port'], 1884); a value that is not TOML stays a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. broker.port=1884")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_override(doc: dict, path: list[str], value, text: str) -> None:
    node = doc
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {text}: {'.'.join(path[:i])} has {len(node)} entries, no [{part}]")
            node = node[int(part)]
        else:
            if part == "pipeline" and part not in node:
                node[part] = [{}]
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {text}: {'.'.join(path[:i + 1])} is a value, not a table")
    if isinstance(node, list):
        raise ConfigError(f"--set {text}: name an entry of {'.'.join(path[:-1])} (e.g. {'.'.join(path[:-1])}.0.key)")
    node[path[-1]] = value


# ---------------------------------------------------------------------------------- validation

def _build(cls, table, where: str, source: str):
    """A dataclass from a TOML table: unknown keys and wrong types are errors naming the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where} must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{source}: {where}.{key}: unknown key (known: {', '.join(known)})")
        default = known[key].default
        want = type(default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise ConfigError(f"{source}: {where}.{key}: expected {want.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


def _check(ok: bool, source: str, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{source}: {key}: {problem}")


def topic_filter(pattern: str) -> str:
    """'sensors/{device}/imu' -> 'sensors/+/imu' (the subscription)."""
    return "/".join("+" if level == DEVICE else level for level in pattern.split("/"))


def _check_pipeline(p: Pipeline, key: str, source: str) -> None:
    levels = p.topic.split("/")
    _check(levels.count(DEVICE) == 1, source, f"{key}.topic", f"{p.topic!r} needs exactly one whole level {DEVICE}")
    _check(not any(c in lv for lv in levels if lv != DEVICE for c in "{}#"), source, f"{key}.topic",
           f"{p.topic!r}: only literal levels, + and one {DEVICE} level")
    _check(re.fullmatch(r"[A-Za-z0-9_.-]+", p.name) is not None, source, f"{key}.name",
           f"{p.name!r}: letters, digits, _ . - only (it names files and metric labels)")
    _check(p.format in FORMATS, source, f"{key}.format", f"{p.format!r}: choose one of {', '.join(FORMATS)}")
    _check(p.output_format in OUTPUT_FORMATS, source, f"{key}.output_format",
           f"{p.output_format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
    _check(p.engine in ENGINES, source, f"{key}.engine", f"{p.engine!r}: choose one of {', '.join(ENGINES)}")
    for k in ("qos", "output_qos"):
        _check(getattr(p, k) in (0, 1), source, f"{key}.{k}", f"{getattr(p, k)}: 0 or 1 (QoS 2 is not supported)")
    _check(not any(c in p.output_topic for c in "+#") and p.output_topic.count(DEVICE) <= 1, source,
           f"{key}.output_topic", f"{p.output_topic!r}: no wildcards, at most one {DEVICE}")
    _check(p.every >= 1, source, f"{key}.every", f"{p.every}: must be >= 1")
    _check(p.max_streams >= 1, source, f"{key}.max_streams", f"{p.max_streams}: must be >= 1")
    _check(p.gap_s > 0 and math.isfinite(p.gap_s), source, f"{key}.gap_s", f"{p.gap_s}: must be > 0")


def validate(doc: dict, source: str) -> Config:
    known = {"broker", "pipeline", "state", "limits", "metrics"}
    for key in doc:
        _check(key in known, source, key, f"unknown section (known: {', '.join(sorted(known))})")
    broker = _build(Broker, doc.get("broker", {}), "broker", source)
    raw = doc.get("pipeline", [{}])
    _check(isinstance(raw, list) and raw, source, "pipeline", "must be a non-empty array of tables ([[pipeline]])")
    pipelines = tuple(_build(Pipeline, t, f"pipeline[{i}]", source) for i, t in enumerate(raw))
    state = _build(State, doc.get("state", {}), "state", source)
    limits = _build(Limits, doc.get("limits", {}), "limits", source)
    metrics = _build(Metrics, doc.get("metrics", {}), "metrics", source)

    _check(0 < broker.port < 65536, source, "broker.port", f"{broker.port}: not a TCP port")
    _check(5 <= broker.keepalive_s <= 65535, source, "broker.keepalive_s", f"{broker.keepalive_s}: 5..65535 s")
    _check(bool(broker.client_id), source, "broker.client_id", "must not be empty (the session is kept under it)")
    _check(1 <= broker.receive_maximum <= 65535, source, "broker.receive_maximum", "1..65535")
    _check(broker.session_expiry_s >= 0, source, "broker.session_expiry_s", "must be >= 0")
    _check(0 < broker.reconnect_min_s <= broker.reconnect_max_s, source, "broker.reconnect_min_s",
           "must be > 0 and <= reconnect_max_s")
    for k in ("password_file", "ca_file", "cert_file", "key_file"):
        path = getattr(broker, k)
        _check(not path or os.path.isfile(path), source, f"broker.{k}", f"{path}: no such file")
    _check(not broker.password_file or broker.username, source, "broker.username", "needed with password_file")
    names = [p.name for p in pipelines]
    for i, p in enumerate(pipelines):
        _check_pipeline(p, f"pipeline[{i}]", source)
        _check(p.name not in names[:i], source, f"pipeline[{i}].name", f"{p.name!r} is already pipeline[{names.index(p.name)}]")
    filters = [topic_filter(p.topic) for p in pipelines]
    _check(len(set(filters)) == len(filters), source, "pipeline", "two pipelines subscribe to the same topic")
    _check(state.interval_s > 0, source, "state.interval_s", "must be > 0")
    longest_gap = max(p.gap_s for p in pipelines)
    _check(state.idle_evict_s >= longest_gap, source, "state.idle_evict_s",
           f"{state.idle_evict_s}: must be >= every pipeline's gap_s ({longest_gap:g}), so that an evicted device "
           "would have had its state reset on return anyway")
    _check(limits.queue_messages >= broker.receive_maximum, source, "limits.queue_messages",
           f"{limits.queue_messages} < broker.receive_maximum {broker.receive_maximum}: QoS 1 messages the broker "
           "may send unacknowledged must fit in the queue")
    for k in ("max_payload_bytes", "max_samples_per_message", "batch_messages", "output_queue"):
        _check(getattr(limits, k) >= 1, source, f"limits.{k}", "must be >= 1")
    _check(limits.max_samples_per_message <= 65535, source, "limits.max_samples_per_message",
           "at most 65535 (the binary frame's count field)")
    _check(limits.output_wait_s >= 0, source, "limits.output_wait_s", "must be >= 0")
    _check(0 <= metrics.port < 65536, source, "metrics.port", f"{metrics.port}: not a TCP port (0 = off)")
    _check(metrics.stats_interval_s > 0, source, "metrics.stats_interval_s", "must be > 0")
    _check(metrics.log_every_s >= 0, source, "metrics.log_every_s", "must be >= 0")
    return Config(broker, pipelines, state, limits, metrics, source)


def load_config(path=None, overrides=()) -> Config:
    """Read `path` (None: defaults only), apply `--set` overrides, validate."""
    doc, source = {}, "<defaults>"
    if path is not None:
        source = os.fspath(path)
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML ({e})") from None
    for text in overrides:
        key, value = parse_override(text)
        apply_override(doc, key, value, text)
    return validate(doc, source)
