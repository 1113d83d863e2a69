"""Simulated IMU devices that publish over MQTT at a real rate: ``edge sim imu``.

A run is planned first, then published. `plan` turns per-device recordings (synthetic, from
`edge.firmware_sim.imu.synthetic_imu`, or a replayed file read by `edge.io.recordings`) into a list of
timed messages, with the faults drawn from a seeded generator; `publish` sends them at their times
with QoS 1 or 0. The plan also says what a correct receiver must accept: ``plan.accepted[device]``
are the samples that survive the order rule (duplicates and out-of-order ones removed, NaN kept),
which is what the tests compare a daemon's outputs against.

Faults (each a probability per message, except ``new_ids``):

* ``jitter_s``: each message leaves up to this much late (uniform); timestamps are not touched.
* ``dropout``: the device goes silent for 0.1–1.5 s (its samples are never sent).
* ``nan``: a burst of 1–20 samples reads NaN in every channel.
* ``saturation``: the message's samples pin one channel at the sensor's full scale (±16 g, ±2000 °/s).
* ``duplicate``: the message is sent twice.
* ``reorder``: the message swaps places with the next one of the same device (the late one is
  then out of order and must be dropped).
* ``garbage``: an extra malformed payload is sent before the message (random bytes, cut JSON,
  a frame whose length disagrees with its header, a sample without a timestamp, the wrong number
  of channels — in turn).
* ``new_ids``: at mid-run, a burst of this many messages from distinct, never-seen device ids.
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass, field

FAULTS = ("jitter_s", "dropout", "nan", "saturation", "duplicate", "reorder", "garbage")
GARBAGE_KINDS = ("random_bytes", "cut_json", "bad_frame_length", "no_timestamp", "wrong_channels")
FULL_SCALE_G, FULL_SCALE_DPS = 16, 2000                    # acc ±16 g, gyr ±2000 °/s (BROAD's myon aktos-t)


@dataclass
class Faults:
    jitter_s: float = 0.0
    dropout: float = 0.0
    nan: float = 0.0
    saturation: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    garbage: float = 0.0
    new_ids: int = 0


@dataclass
class Plan:
    messages: list                  # (due_s, topic, payload, kind), sorted by due time
    accepted: dict                  # device -> (t [n], x [n, 6]) a correct receiver keeps, in order
    counts: dict = field(default_factory=dict)     # kind -> messages; duplicate_samples, late_samples: dropped


def device_name(i: int) -> str:
    return f"imu{i:04d}"


def recordings(devices: int, duration_s: float, rate_hz: float, seed: int = 0, source: str | None = None):
    """One (t, x [n, 6] acc+gyr) per device: synthetic (seed + i), or slices of a recording file."""
    import numpy as np

    from edge.firmware_sim.imu import synthetic_imu
    if source is None:
        out = []
        for i in range(devices):
            rec = synthetic_imu(duration_s, rate_hz, seed=seed + i, initial="level")
            out.append((rec.t, np.concatenate([rec.acc, rec.gyr], axis=1).astype(np.float32)))
        return out
    from edge.io.recordings import read_recording
    rec = read_recording(source)
    x = np.concatenate([rec.acc, rec.gyr], axis=1).astype(np.float32)
    n = min(len(rec), int(duration_s * rec.rate_hz) + 1)
    out = []
    for i in range(devices):         # each device replays the file from its own offset (wrapping around)
        idx = (np.arange(n) + i * len(rec) // max(devices, 1)) % len(rec)
        out.append((np.arange(n) / rec.rate_hz, x[idx]))
    return out


def _garbage(kind: str, rng, layout) -> bytes:
    import numpy as np

    from edge.daemon.payload import encode_frame
    if kind == "random_bytes":
        return rng.bytes(int(rng.integers(1, 64)))
    if kind == "cut_json":
        return layout.encode([0.0], np.zeros((1, 6)))[:-7]
    if kind == "bad_frame_length":
        return encode_frame(np.zeros((3, 6)), t0=0.0, dt=0.01)[:-4]
    if kind == "no_timestamp":
        return b'{"acc": [0, 0, 9.8], "gyr": [0, 0, 0]}'
    return encode_frame(np.zeros((2, 5)), t0=0.0, dt=0.01)        # wrong_channels


def plan(devices: int = 20, rate_hz: float = 200.0, duration_s: float = 10.0, *, samples_per_message: int = 5,
         fmt: str = "binary", topic: str = "sensors/{device}/imu", faults: Faults = Faults(), seed: int = 0,
         source: str | None = None, t0: float = 0.0) -> Plan:
    """Plan a run: the messages to send at their times, and what a receiver must accept."""
    import numpy as np

    from edge.daemon.payload import JsonLayout, encode_frame
    from edge.io.recordings import STANDARD_GRAVITY
    full_scale = (FULL_SCALE_G * STANDARD_GRAVITY, math.radians(FULL_SCALE_DPS))   # m/s², rad/s
    channels = ["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"]
    layout = JsonLayout(channels)

    def encode(t, x, seq=None):
        if fmt == "binary":
            return encode_frame(x, t0=float(t[0]), dt=1.0 / rate_hz, seq=seq)
        return layout.encode(t, x, seq=seq, single=samples_per_message == 1)    # one sample: a bare object

    rng = np.random.default_rng(seed)
    messages, accepted, counts = [], {}, {}

    def emit(due, tpc, payload, kind):
        messages.append((due, tpc, payload, kind))
        counts[kind] = counts.get(kind, 0) + 1

    for i, (t, x) in enumerate(recordings(devices, duration_s, rate_hz, seed, source)):
        device = device_name(i)
        tpc = topic.replace("{device}", device)
        t = t + t0
        x = x.copy()
        k = samples_per_message
        chunks = [(t[a:a + k], x[a:a + k], a) for a in range(0, len(t), k)]     # a: the first sample's seq
        if fmt == "binary":              # a frame carries t0 and dt: its samples are at exactly t0 + i*dt
            chunks = [(ct[0] + (1.0 / rate_hz) * np.arange(len(ct)), cx, a) for ct, cx, a in chunks]
        silent_until = last_due = -math.inf
        sends = []                                   # (due, t, x, kind) of this device, in send order
        for ct, cx, seq in chunks:
            if ct[0] < silent_until:
                counts["dropout_samples"] = counts.get("dropout_samples", 0) + len(ct)
                continue
            if rng.random() < faults.dropout:
                silent_until = ct[0] + rng.uniform(0.1, 1.5)
                counts["dropout"] = counts.get("dropout", 0) + 1
                counts["dropout_samples"] = counts.get("dropout_samples", 0) + len(ct)
                continue
            kind = "sample"
            if rng.random() < faults.nan:
                a = int(rng.integers(0, len(ct)))
                cx[a:a + int(rng.integers(1, 21))] = np.nan
                kind = "nan"
            if rng.random() < faults.saturation:
                ch = int(rng.integers(0, 6))
                cx[:, ch] = np.sign(cx[:, ch] + 1e-9) * full_scale[ch // 3]
                kind = "saturation"
            # late by the jitter, but never before the device's previous message (that would be a reorder)
            due = last_due = max(last_due, float(ct[-1] - t0) + rng.uniform(0.0, faults.jitter_s))
            if rng.random() < faults.garbage:
                gkind = GARBAGE_KINDS[counts.get("garbage", 0) % len(GARBAGE_KINDS)]
                emit(due, tpc, _garbage(gkind, rng, layout), "garbage")
            sends.append([due, ct, cx, kind, seq])
            if rng.random() < faults.duplicate:
                sends.append([due, ct, cx, "duplicate", seq])
        for j in range(len(sends) - 1):
            if sends[j][3] != "duplicate" and sends[j + 1][3] != "duplicate" and rng.random() < faults.reorder:
                sends[j][0], sends[j + 1][0] = sends[j + 1][0], sends[j][0]
                sends[j], sends[j + 1] = sends[j + 1], sends[j]
                sends[j][3] = "reordered"
        last, keep_t, keep_x = -math.inf, [], []
        for due, ct, cx, kind, seq in sends:         # the order rule, as the receiver applies it
            emit(due, tpc, encode(ct, cx, seq), kind)
            new = ct > last
            stale = "duplicate_samples" if kind == "duplicate" else "late_samples"
            counts[stale] = counts.get(stale, 0) + int((~new).sum())
            keep_t.append(ct[new])
            keep_x.append(cx[new])
            last = max(last, float(ct[-1]))
        accepted[device] = (np.concatenate(keep_t), np.concatenate(keep_x))
    if faults.new_ids:
        burst_t = duration_s / 2
        one = np.zeros((1, 6), np.float32)
        one[0, 2] = 9.81
        for j in range(faults.new_ids):
            emit(burst_t, topic.replace("{device}", f"burst{j:05d}"), encode(np.array([t0 + burst_t]), one), "new_id")
    messages.sort(key=lambda m: m[0])        # stable: a device's messages keep their send order at equal times
    return Plan(messages, accepted, counts)


def publish(p: Plan, host: str = "127.0.0.1", port: int = 1883, *, qos: int = 1, client_id: str = "edge-sim",
            realtime: bool = True, progress: bool = False, timeout_s: float = 60.0, brokers=None,
            protocol: str = "5") -> dict:
    """Send a plan's messages at their due times (as fast as possible with ``realtime=False``).
    QoS 1 messages are kept and re-sent by paho across broker outages; returns counts.

    Order across a reconnect: paho calls on_connect and only then re-sends what it holds, so a message
    published in between overtakes that backlog (seen here: a device's samples 2.5-9.2 s arriving after
    its 9.2 s message). While the broker is away we therefore publish nothing, and after the reconnect
    we wait until the broker has the backlog: like a careful device, the simulator keeps its order.

    ``brokers``: [(host, port), ...] to rotate through (the next one after each lost or failed connection:
    a cluster's nodes), instead of host and port. ``protocol``: "5" or "3.1.1" (NATS' MQTT gateway)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from edge.daemon.brokers import Rotation
    from edge.daemon.service import delivered
    version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    c.suppress_exceptions = True
    c.reconnect_delay_set(0.2, 2.0)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(50000)
    connected = threading.Event()
    c.on_connect = lambda client, userdata, flags, reason, props: None if reason.is_failure else connected.set()
    brokers = list(brokers or [(host, port)])
    rotation = Rotation(c, brokers, on_disconnect=lambda *args: connected.clear())
    c.connect_async(*brokers[0], keepalive=30)
    c.loop_start()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(p.messages), unit="msg", file=sys.stderr, desc="publishing")
    start = time.monotonic()
    waits = 0
    infos = []

    def backlog_delivered(until: float) -> list:
        pending = [i for i in infos if not delivered(i)]
        while pending and time.monotonic() < until:
            time.sleep(0.01)
            pending = [i for i in pending if not delivered(i)]
        return pending

    try:
        for due, topic, payload, _ in p.messages:
            if realtime:
                delay = start + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if not connected.is_set():                 # broker away: hold on, then let the backlog go first
                connected.wait(timeout_s)
                infos = backlog_delivered(time.monotonic() + timeout_s)
            while True:
                info = c.publish(topic, payload, qos=qos)
                if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) and (qos or info.rc == 0):
                    break
                if info.rc not in (mqtt.MQTT_ERR_QUEUE_SIZE, mqtt.MQTT_ERR_NO_CONN):
                    raise RuntimeError(f"publish to {topic}: {mqtt.error_string(info.rc)}")
                waits += 1                    # our send window is full (or QoS 0 while disconnected): wait
                time.sleep(0.002)
            if qos:
                infos.append(info)
            if bar is not None:
                bar.update()
        infos = backlog_delivered(time.monotonic() + timeout_s)      # until the broker has every QoS 1 message
    finally:
        if bar is not None:
            bar.close()
        c.disconnect()
        c.loop_stop()
    return {"messages": len(p.messages), "unconfirmed": len(infos), "window_waits": waits, "broker_moves": rotation.moves,
            "seconds": round(time.monotonic() - start, 3)}


# ------------------------------------------------------------------------------------ command line

EPILOG = """\
examples:
  edge sim imu --devices 20 --rate 200 --duration 10
      20 synthetic IMUs at 200 Hz for 10 s to 127.0.0.1:1883, 5 samples per binary frame, QoS 1
  edge sim imu --devices 5 --rate 285.714 --recording examples/imu-demo.csv --format json
      replay the demo recording (each device from its own offset) as JSON at the bundle's rate
  edge sim imu --devices 50 --duration 20 --jitter-s 0.02 --dropout 0.01 --nan 0.02 --garbage 0.01 \\
               --duplicate 0.01 --reorder 0.01 --saturation 0.01 --new-ids 10000
      every fault at once, and 10,000 never-seen device ids at mid-run
  edge sim imu --devices 1000 --rate 100 --samples-per-message 50 --no-realtime --qos 0
      a load run: as fast as the broker takes it"""


def add_subparser(sub) -> None:
    from edge.argtypes import integer, positive_float
    s = sub.add_parser("sim", help="simulated devices that publish over MQTT (edge sim imu)",
                       description="Simulated sensor devices for tests and load runs.")
    kinds = s.add_subparsers(dest="device", metavar="DEVICE", required=True)
    p = kinds.add_parser("imu", help="IMUs publishing acc+gyr samples at a real rate, with optional faults",
                         description=__doc__.split("\n\n", 1)[1], epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=integer(1), default=20, help="number of devices (default 20)")
    p.add_argument("--rate", type=positive_float, default=200.0, help="samples per second per device (default 200)")
    p.add_argument("--duration", type=positive_float, default=10.0, help="seconds of data per device (default 10)")
    p.add_argument("--samples-per-message", type=integer(1), default=5, help="samples per message, at most 65535 (default 5)")
    p.add_argument("--format", choices=["binary", "json"], default="binary", help="payload format (docs/daemon.md)")
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT[,HOST:PORT...]",
                   help="the broker; several (a cluster's MQTT gateways): the next one after each lost connection")
    p.add_argument("--mqtt", choices=["5", "3.1.1"], default="5", help="protocol version (NATS' gateway: 3.1.1)")
    p.add_argument("--topic", default="sensors/{device}/imu", help="topic template (default sensors/{device}/imu)")
    p.add_argument("--qos", type=int, choices=[0, 1], default=1)
    p.add_argument("--recording", default=None, metavar="FILE", help="replay this recording instead of synthetic data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-realtime", action="store_true", help="send as fast as possible instead of at the sample rate")
    f = p.add_argument_group("faults (probability per message; see above)")
    helps = {"jitter_s": "each message leaves up to S seconds late", "dropout": "the device goes silent 0.1-1.5 s",
             "nan": "a burst of 1-20 NaN samples", "saturation": "one channel pinned at full scale",
             "duplicate": "the message is sent twice", "reorder": "the message swaps with the next one",
             "garbage": "a malformed payload is sent before the message"}
    for name in FAULTS:
        f.add_argument(f"--{name.replace('_', '-')}", type=float, default=0.0, help=helps[name],
                       metavar="S" if name == "jitter_s" else "P")
    f.add_argument("--new-ids", type=integer(0), default=0, metavar="N", help="a burst of N new device ids at mid-run")
    p.set_defaults(func=run)


def run(args) -> int:
    from edge.daemon.brokers import parse_addresses
    try:
        brokers = parse_addresses(args.broker)
    except ValueError as e:
        print(f"edge sim imu: {e}", file=sys.stderr)
        return 2
    faults = Faults(**{k: getattr(args, k) for k in FAULTS}, new_ids=args.new_ids)
    p = plan(args.devices, args.rate, args.duration, samples_per_message=args.samples_per_message, fmt=args.format,
             topic=args.topic, faults=faults, seed=args.seed, source=args.recording)
    print(f"planned {len(p.messages)} messages: " + ", ".join(f"{k} {v}" for k, v in sorted(p.counts.items())),
          file=sys.stderr)
    out = publish(p, brokers=brokers, qos=args.qos, realtime=not args.no_realtime, progress=True,
                  client_id=f"edge-sim-{args.seed}", protocol=args.mqtt)
    print(f"sent {out['messages']} messages in {out['seconds']} s; unconfirmed by the broker: {out['unconfirmed']}")
    return 0 if out["unconfirmed"] == 0 else 1
