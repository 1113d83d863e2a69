"""`edge run`: the daemon. MQTT in, engine, MQTT out, state that survives restarts.

Threads and who owns what:

* paho's network thread (``loop_start``) only appends ``(topic, payload, mid, qos, dup, time)`` to
  a bounded queue (`Inbox`); it never decodes, never blocks.
* the main thread is the worker: it takes up to ``limits.batch_messages`` messages, decodes them,
  advances every pending device in a few engine calls (`pipeline.Pipeline`), publishes, and does
  the housekeeping (checkpoints, acknowledgements, metrics, stats, watchdog, signals).
* the metrics HTTP server answers from its own thread under the registry's lock.

Nothing lost (QoS 1): the session is persistent (fixed client id, clean start off, session expiry)
and incoming messages are acknowledged by hand, only once (a) the checkpoint that holds their
effect on the state is written (atomically: write, fsync, rename) and (b) the broker has
acknowledged every output they produced. A crash at any moment therefore leaves every sample
either in the checkpoint or unacknowledged at the broker, which sends it again; the re-sent
samples the checkpoint already holds are recognised by their timestamps and dropped
(``redelivered``). Outputs are at-least-once: after a crash, samples since the last checkpoint
are processed and published again, with the same values.

Flow control: the broker has at most ``broker.receive_maximum`` unacknowledged QoS 1 messages in
flight to us, and the inbox holds at least that many, so QoS 1 never overflows it; a checkpoint
is taken early when half that window waits for one. QoS 0 messages beyond the inbox are dropped
(``queue_full``). Outputs wait up to ``limits.output_wait_s`` for room in paho's bounded outgoing
queue, then are dropped (``output_queue_full``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.daemon.config import ConfigError, load_config, topic_filter
from edge.daemon.metrics import Registry, serve
from edge.daemon.payload import PayloadError, encode_frame, encode_outputs_json
from edge.daemon.systemd import Notifier
from edge.engine.state_table import StateFileError

log = logging.getLogger("edge.daemon")

SAMPLE_DROPS = ("duplicate", "out_of_order", "redelivered")


@dataclass
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    arrived: float        # time.monotonic() in the network thread
    generation: int       # connection it arrived on: an ack is only valid on that connection


@dataclass
class Batch:
    """Messages processed together, acknowledged together once durable and published."""
    acks: list            # (mid, qos, generation)
    outputs: list         # paho MQTTMessageInfo of the results
    durable: bool         # the state after this batch is in a checkpoint (or there is none to wait for)


def delivered(info) -> bool:
    """True once the broker has a published message. paho's `is_published()` raises for a QoS 1
    message queued while disconnected (its rc stays MQTT_ERR_NO_CONN), although paho sends it after
    the reconnect and marks it published when the broker acknowledges it: read that mark."""
    return info._published


class Metrics:
    """Everything the daemon counts, on one registry (see docs/daemon.md for the list)."""

    def __init__(self):
        r = self.registry = Registry()
        self.messages_in = r.counter("edge_messages_in_total", "MQTT messages received", ["pipeline"])
        self.samples_in = r.counter("edge_samples_in_total", "samples fed to the engine", ["pipeline"])
        self.samples_out = r.counter("edge_samples_out_total", "outputs published", ["pipeline"])
        self.messages_dropped = r.counter("edge_messages_dropped_total", "whole messages dropped, by reason",
                                          ["pipeline", "reason"])
        self.samples_dropped = r.counter("edge_samples_dropped_total", "samples dropped by the order rule",
                                         ["pipeline", "reason"])
        self.not_fed = r.counter("edge_samples_not_fed_total", "samples with NaN/Inf: kept out of the engine, "
                                 "state held", ["pipeline"])
        self.gap_resets = r.counter("edge_gap_resets_total", "state resets after a gap", ["pipeline"])
        self.out_of_range = r.counter("edge_samples_out_of_range_total", "samples outside a channel's valid range: "
                                      "kept out of the engine, state held", ["pipeline"])
        self.state_resets = r.counter("edge_state_resets_nonfinite_total", "devices whose state turned NaN/Inf: "
                                      "reset to the initial state, never checkpointed", ["pipeline"])
        self.evicted = r.counter("edge_streams_evicted_total", "idle devices that gave up their slot",
                                 ["pipeline"])
        self.samples_missing = r.counter("edge_samples_missing_total", "samples a device numbered (seq) that never "
                                         "arrived: the gaps in its sequence", ["pipeline"])
        self.devices_missing = r.counter("edge_devices_with_missing_samples_total", "devices with at least one gap "
                                         "in their sequence (each warned about once)", ["pipeline"])
        self.rate_mismatch = r.counter("edge_devices_rate_mismatch_total", "devices whose rate differs from "
                                       "the bundle's by more than 0.5 % (not resampled)", ["pipeline"])
        self.streams = r.gauge("edge_active_streams", "devices with a slot", ["pipeline"])
        self.queue_depth = r.gauge("edge_queue_depth", "messages waiting for the worker")
        self.unacked = r.gauge("edge_unacked_messages", "QoS 1 messages waiting for a checkpoint/publish")
        self.connected = r.gauge("edge_mqtt_connected", "1 while connected to the broker")
        self.connects = r.counter("edge_mqtt_connects_total", "successful connections (reconnects + 1)")
        self.publish_errors = r.counter("edge_publish_errors_total", "outputs not queued, by paho's reason",
                                        ["reason"])
        self.checkpoints = r.counter("edge_checkpoints_total", "state checkpoints written")
        self.checkpoint_errors = r.counter("edge_checkpoint_errors_total", "checkpoints that failed")
        self.checkpoint_age = r.gauge("edge_checkpoint_age_seconds", "seconds since the last checkpoint")
        self.reloads = r.counter("edge_reloads_total", "configuration reloads (SIGHUP), by result", ["result"])
        self.engine = r.histogram("edge_engine_seconds", "engine time per block call",
                                  [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1])
        self.latency = r.histogram("edge_latency_seconds", "message arrival to its outputs published",
                                   [5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5])
        self._events = {"not_fed_nonfinite": self.not_fed, "gap_resets": self.gap_resets,
                        "out_of_range": self.out_of_range, "state_reset_nonfinite": self.state_resets,
                        "evicted_idle": self.evicted, "rate_mismatch": self.rate_mismatch,
                        "samples_missing": self.samples_missing, "device_missing": self.devices_missing}

    def inc(self, event: str, pipeline: str, by: int = 1) -> None:
        """The pipeline's events (see pipeline.Pipeline) to their metric."""
        if event in SAMPLE_DROPS:
            self.samples_dropped.inc(pipeline, event, by=by)
        else:
            self._events[event].inc(pipeline, by=by)

    def snapshot(self) -> dict:
        """Counters as a plain dict, for the stats message."""
        return {m.name: {"/".join(k) or "all": v for k, v in m.values().items()}
                for m in (self.messages_in, self.samples_in, self.samples_out, self.messages_dropped,
                          self.samples_dropped, self.samples_missing, self.not_fed, self.out_of_range,
                          self.state_resets, self.gap_resets,
                          self.rate_mismatch, self.streams, self.queue_depth)}


class RateLimitedLog:
    """At most one line per reason per `every_s`, naming the device; says how many it kept quiet."""

    def __init__(self, every_s: float):
        self.every_s, self.last, self.quiet = every_s, {}, {}

    def __call__(self, reason: str, text: str, now: float) -> None:
        if now - self.last.get(reason, -1e18) < self.every_s:
            self.quiet[reason] = self.quiet.get(reason, 0) + 1
            return
        more = self.quiet.pop(reason, 0)
        self.last[reason] = now
        log.warning("dropped (%s): %s%s", reason, text, f" [+{more} more since the last line]" if more else "")


class Inbox:
    """Bounded queue between the network thread and the worker."""

    def __init__(self, size: int):
        self.q = queue.Queue(size)

    def put(self, m: Message) -> bool:
        try:
            self.q.put_nowait(m)
            return True
        except queue.Full:
            return False

    def take(self, most: int, wait_s: float) -> list:
        try:
            out = [self.q.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while len(out) < most:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                break
        return out


class Daemon:
    def __init__(self, config_path, overrides=(), environ=os.environ):
        self.config_path, self.overrides = config_path, list(overrides)
        self.cfg = load_config(config_path, self.overrides)
        if self.cfg.state.dir:
            try:
                os.makedirs(self.cfg.state.dir, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"{self.cfg.source}: state.dir: cannot create {self.cfg.state.dir} ({e.strerror})") from None
        self.metrics = Metrics()
        self.notifier = Notifier(environ)
        self.inbox = Inbox(self.cfg.limits.queue_messages)
        self.batches: deque[Batch] = deque()
        self.unacked = 0
        self.generation = self.published_generation = 0     # connections so far; the one we last published on
        self.subscribed = threading.Event()
        self.connected = False
        self.stop_requested = self.reload_requested = False
        self.last_checkpoint = self.last_stats = time.monotonic()
        self.pipelines = {}
        self.bad_log = RateLimitedLog(self.cfg.metrics.log_every_s)

    # ------------------------------------------------------------------------ setup

    def _state_path(self, name: str) -> Path | None:
        return Path(self.cfg.state.dir) / f"{name}.state.npz" if self.cfg.state.dir else None

    def _build_pipelines(self, old: dict) -> dict:
        from edge.daemon.pipeline import Pipeline
        now = time.monotonic()
        pipes = {}
        for pc in self.cfg.pipelines:
            prev = old.get(pc.name)
            keep_model = prev is not None and (prev.cfg.bundle, prev.cfg.engine) == (pc.bundle, pc.engine)
            p = Pipeline(pc, self.cfg.limits, self.cfg.state.idle_evict_s, self.metrics, log,
                         model=prev.model if keep_model else None)
            path = self._state_path(pc.name)
            if path is not None:
                n = p.restore(path, now)
                log.info("pipeline %s: %s on %s (%s); %d devices restored from %s", pc.name, pc.bundle,
                         p.model.engine, p.model.reason, n, path)
            elif prev is not None and prev.fingerprint == p.fingerprint and prev.cfg.max_streams == pc.max_streams:
                p.table, p.devices = prev.table, prev.devices       # no checkpoint to go through: hand over
            pipes[pc.name] = p
        return pipes

    def _client(self):
        b = self.cfg.broker
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=b.client_id, protocol=MQTTProtocolVersion.MQTTv5,
                        manual_ack=True)
        c.suppress_exceptions = True           # a bug in a callback must not kill the network thread...
        c.enable_logger(logging.getLogger("edge.daemon.mqtt"))    # ...and is logged (paho's own warnings too)
        if b.username:
            c.username_pw_set(b.username, self.cfg.password())
        if b.tls:
            c.tls_set(ca_certs=b.ca_file or None, certfile=b.cert_file or None, keyfile=b.key_file or None,
                      cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(b.reconnect_min_s, b.reconnect_max_s)
        c.max_inflight_messages_set(b.receive_maximum)
        c.max_queued_messages_set(self.cfg.limits.output_queue)
        c.on_connect, c.on_disconnect, c.on_message = self._on_connect, self._on_disconnect, self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = b.session_expiry_s
        props.ReceiveMaximum = b.receive_maximum
        c.connect_async(b.host, b.port, keepalive=b.keepalive_s, clean_start=False, properties=props)
        return c

    # ------------------------------------------------------------------------ network thread

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker %s:%d refused the connection: %s", self.cfg.broker.host, self.cfg.broker.port, reason_code)
            return
        self.generation += 1
        self.connected = True
        self.metrics.connected.set(value=1)
        self.metrics.connects.inc()
        log.info("connected to %s:%d (session present: %s)", self.cfg.broker.host, self.cfg.broker.port,
                 flags.session_present)
        client.subscribe([(topic_filter(p.topic), SubscribeOptions(qos=p.qos)) for p in self.cfg.pipelines])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        self.metrics.connected.set(value=0)
        if not self.stop_requested:
            log.warning("disconnected from the broker (%s); reconnecting with backoff", reason_code)

    def _on_message(self, client, userdata, msg):
        m = Message(msg.topic, msg.payload, msg.mid, msg.qos, msg.dup, time.monotonic(), self.generation)
        if not self.inbox.put(m):
            self.metrics.messages_dropped.inc("*", "queue_full")
            client.ack(msg.mid, msg.qos)       # QoS 0 only in practice: QoS 1 fits by receive_maximum

    # ------------------------------------------------------------------------ worker

    def _route(self, topic: str):
        levels = topic.split("/")
        for p in self.pipelines.values():
            pattern = p.cfg.topic.split("/")
            if len(pattern) == len(levels) and all(a in ("+", "{device}") or a == b for a, b in zip(pattern, levels)):
                return p, levels[pattern.index("{device}")]
        return None, None

    def _process(self, messages: list) -> None:
        acks = []
        touched = {}
        for m in messages:
            if m.qos:
                acks.append((m.mid, m.qos, m.generation))
            p, device = self._route(m.topic)
            if p is None:
                self.metrics.messages_dropped.inc("*", "no_pipeline")
                continue
            name = p.cfg.name
            self.metrics.messages_in.inc(name)
            try:
                n = p.accept(device, m.payload, m.arrived, redelivered=m.dup)
            except PayloadError as e:
                self.metrics.messages_dropped.inc(name, e.reason)
                self.bad_log(e.reason, f"{m.topic}: {e}", m.arrived)
                continue
            self.metrics.samples_in.inc(name, by=n)
            touched.setdefault(name, []).append(m.arrived)
        outputs = []
        for name, arrivals in touched.items():
            p = self.pipelines[name]
            outputs.extend(self._publish(p, p.advance(self.metrics.engine.observe)))
            now = time.monotonic()
            for a in arrivals:
                self.metrics.latency.observe(now - a)
        self.batches.append(Batch(acks, outputs, durable=self.cfg.state.dir == ""))
        self.unacked += len(acks)

    def _publish(self, p, results: dict) -> list:
        infos = []
        for device, (t, y) in results.items():
            topic = p.cfg.output_topic.replace("{device}", device)
            payload = encode_outputs_json(t, y) if p.cfg.output_format == "json" else encode_frame(y, t=t)
            info = self._send(topic, payload, p.cfg.output_qos)
            if info is not None:
                infos.append(info)
                self.metrics.samples_out.inc(p.cfg.name, by=len(t))
        return infos

    def _send(self, topic: str, payload: bytes, qos: int):
        """Publish, waiting for room in paho's bounded queue; None when the result is dropped."""
        deadline = time.monotonic() + self.cfg.limits.output_wait_s
        if self.published_generation != self.generation:
            # paho calls on_connect before it re-sends what it holds: a publish in between would overtake
            # that backlog and break the per-device order of outputs, so let the backlog go first
            while time.monotonic() < deadline and not all(delivered(i) for b in self.batches for i in b.outputs):
                self.notifier.watchdog(time.monotonic())
                time.sleep(0.005)
            self.published_generation = self.generation
        while True:
            info = self.client.publish(topic, payload, qos=qos)
            # QoS 1 without a connection is kept by paho and sent after the reconnect
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos and info.rc == mqtt.MQTT_ERR_NO_CONN):
                return info
            if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE or time.monotonic() > deadline or self.stop_requested:
                reason = "output_queue_full" if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE else mqtt.error_string(info.rc)
                self.metrics.publish_errors.inc(reason)
                return None
            self.notifier.watchdog(time.monotonic())      # waiting on the broker is not being stuck
            time.sleep(0.005)

    def _checkpoint(self) -> None:
        try:
            for name, p in self.pipelines.items():
                p.save(self._state_path(name))
        except (OSError, StateFileError) as e:          # StateFileError: a non-finite state is never written
            self.metrics.checkpoint_errors.inc()
            log.error("checkpoint to %s failed: %s; messages stay unacknowledged", self.cfg.state.dir, e)
            return
        self.metrics.checkpoints.inc()
        self.last_checkpoint = time.monotonic()
        for b in self.batches:
            b.durable = True

    def _acknowledge(self) -> None:
        """Ack the oldest batches that are durable and whose outputs the broker has."""
        while self.batches and self.batches[0].durable and all(map(delivered, self.batches[0].outputs)):
            b = self.batches.popleft()
            for mid, qos, generation in b.acks:
                if generation == self.generation:     # else the broker re-sends it; the order rule drops it
                    self.client.ack(mid, qos)
            self.unacked -= len(b.acks)

    def _housekeeping(self, now: float) -> None:
        cfg = self.cfg
        if cfg.state.dir and self.batches and not self.batches[-1].durable and (
                now - self.last_checkpoint >= cfg.state.interval_s or self.unacked >= cfg.broker.receive_maximum // 2):
            self._checkpoint()
        self._acknowledge()
        for p in self.pipelines.values():
            p.evict_idle(now)
        for name, p in self.pipelines.items():
            self.metrics.streams.set(name, value=len(p.devices))
        self.metrics.queue_depth.set(value=self.inbox.q.qsize())
        self.metrics.unacked.set(value=self.unacked)
        self.metrics.checkpoint_age.set(value=now - self.last_checkpoint)
        if cfg.metrics.stats_topic and now - self.last_stats >= cfg.metrics.stats_interval_s:
            self.last_stats = now
            topic = cfg.metrics.stats_topic.replace("{client_id}", cfg.broker.client_id)
            info = self.client.publish(topic, json.dumps({"time": time.time(), **self.metrics.snapshot()}), qos=0)
            if info.rc:                                   # e.g. not connected: the next one will tell
                self.metrics.publish_errors.inc("stats: " + mqtt.error_string(info.rc))
        self.notifier.watchdog(now)

    # ------------------------------------------------------------------------ reload

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, self.overrides)
        except ConfigError as e:
            log.error("reload refused, the running configuration stays: %s", e)
            self.metrics.reloads.inc("refused")
            self.notifier.ready("reload refused")
            return
        new, fixed = _keep_fixed(new, self.cfg)
        if fixed:
            log.warning("reload: %s changed; that takes a restart (kept as running)", ", ".join(fixed))
        self._drain_all()
        if self.cfg.state.dir:
            self._checkpoint()
        old_filters = {topic_filter(p.topic) for p in self.cfg.pipelines}
        (old_cfg, old), self.cfg = (self.cfg, self.pipelines), new
        try:
            self.pipelines = self._build_pipelines(old)
        except Exception as e:       # a bundle that does not load (BundleError, onnxruntime's own errors, ...)
            log.error("reload refused, the running configuration stays: %s", e)
            self.cfg, self.pipelines = old_cfg, old
            self.metrics.reloads.inc("refused")
            self.notifier.ready("reload refused")
            return
        self.bad_log.every_s = new.metrics.log_every_s
        new_filters = {topic_filter(p.topic) for p in new.pipelines}
        if old_filters - new_filters:
            self.client.unsubscribe(sorted(old_filters - new_filters))
        if new_filters - old_filters:
            self.client.subscribe([(topic_filter(p.topic), SubscribeOptions(qos=p.qos)) for p in new.pipelines
                                   if topic_filter(p.topic) in new_filters - old_filters])
        self.metrics.reloads.inc("applied")
        log.info("reloaded %s: pipelines %s", self.config_path, ", ".join(self.pipelines))
        self.notifier.ready("reloaded")

    def _drain_all(self) -> None:
        while True:
            batch = self.inbox.take(self.cfg.limits.batch_messages, 0.0)
            if not batch:
                return
            self._process(batch)

    # ------------------------------------------------------------------------ main

    def _signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True

    def run(self, ready_timeout_s: float = 0.0) -> int:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._signal)
        self.pipelines = self._build_pipelines({})
        for p in self.pipelines.values():           # the first engine call compiles or loads its cache: before READY
            p.model.block(np.zeros((1, 1, p.model.input_size), np.float32), p.model.init_state(1))
        server = None
        if self.cfg.metrics.port:
            server = serve(self.metrics.registry, self.cfg.metrics.bind, self.cfg.metrics.port)
            log.info("metrics on http://%s:%d/metrics", *server.server_address[:2])
        self.client = self._client()
        self.client.loop_start()
        ready = False
        try:
            while not self.stop_requested:
                if not ready and self.subscribed.is_set():
                    self.notifier.ready(f"subscribed to {self.cfg.broker.host}:{self.cfg.broker.port}")
                    ready = True
                if self.reload_requested:
                    self.reload_requested = False
                    self._reload()
                batch = self.inbox.take(self.cfg.limits.batch_messages, 0.05)
                if batch:
                    self._process(batch)
                self._housekeeping(time.monotonic())
        finally:
            self.notifier.stopping()
            self._drain_all()
            if self.cfg.state.dir:
                self._checkpoint()
            deadline = time.monotonic() + 2.0      # give paho a moment to deliver outputs and acks
            while self.batches and time.monotonic() < deadline and self.connected:
                self._acknowledge()
                time.sleep(0.01)
            self.client.disconnect()
            self.client.loop_stop()
            if server is not None:
                server.shutdown()
            log.info("stopped: state %s", "checkpointed" if self.cfg.state.dir else "not kept (no state.dir)")
        return 0


# keys a reload cannot apply to a running process: (section, field or None for the whole section)
RESTART_KEYS = (("broker", None), ("metrics", "bind"), ("metrics", "port"), ("limits", "queue_messages"),
                ("state", "dir"))


def _keep_fixed(new, running):
    """`new` with the running values of RESTART_KEYS, and the names of those that differed."""
    changed = []
    for section, key in RESTART_KEYS:
        old_part, new_part = getattr(running, section), getattr(new, section)
        if key is None:
            if new_part != old_part:
                changed.append(section)
                new = dataclasses.replace(new, **{section: old_part})
        elif getattr(new_part, key) != getattr(old_part, key):
            changed.append(f"{section}.{key}")
            new = dataclasses.replace(new, **{section: dataclasses.replace(new_part, **{key: getattr(old_part, key)})})
    return new, changed
