"""Throughput and latency of `edge run` beside a bare paho subscriber, on one mosquitto (not a test).

    python bench/daemon_throughput.py                 # 1, 100, 1000 devices; single and batched payloads
    python bench/daemon_throughput.py --quick         # smaller backlogs, shorter paced runs
    python bench/daemon_throughput.py --json out.json

For each payload kind (one sample per binary frame, and 50 samples per frame):

* **bare drain**: a backlog of QoS 1 messages waits in an offline persistent session; a bare paho
  subscriber (`loop_forever`, a handler that only counts) drains it. Messages/s and samples/s.
* **daemon drain**: the same backlog for the daemon's session, spread over 1, 100 or 1000 devices;
  `edge run` (examples/edge.toml: imu-attitude, QoS 1 in and out, checkpoints on; outputs as binary
  frames, the high-rate choice: JSON outputs cost about 10 µs per sample to encode) drains it. Samples/s are read from its
  own /metrics (published outputs over time, polled every 50 ms), so start-up is not counted.
* **latency**: the publisher paces samples (``--paced-rate`` samples/s in total), each stamped with
  its send time; a subscriber of the outputs takes p50/p99 of receive time minus stamp, through
  broker → daemon → broker → subscriber.

The ratio columns are daemon / bare, measured in the same run on the same broker: by wall-clock
samples/s, and by samples per CPU-second of the subscriber's own process (user + system time over
the drain), which holds up far better when other work shares the cores. Targets (issue 5):
ratio >= 0.7 and >= 100k samples/s with batched payloads.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mqtt_broker import Broker, free_port  # noqa: E402  (the tests' broker fixture: same config, same limits)

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edge.daemon.payload import decode_frame, encode_frame  # noqa: E402
from edge.firmware_sim.mqtt_sim import Plan, publish  # noqa: E402

TOPIC = "sensors/{device}/imu"


def client(client_id: str, port: int, clean: bool = False) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0 if clean else 3600
    props.ReceiveMaximum = 1000
    c.connect("127.0.0.1", port, clean_start=clean, properties=props)
    return c


def open_session(client_id: str, port: int, topic: str) -> None:
    """Create a persistent session subscribed to `topic`, then go offline: the broker queues for it."""
    c = client(client_id, port)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.loop_start()
    c.subscribe(topic, qos=1)
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def backlog(devices: int, messages: int, per_message: int, rate_hz: float = 200.0) -> Plan:
    """`messages` frames round-robin over the devices, timestamps advancing per device."""
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 0.2, (per_message, 6)) + [0, 0, 9.81, 0, 0, 0]).astype(np.float32)
    out = []
    for k in range(messages):
        d, j = k % devices, k // devices
        out.append((0.0, TOPIC.replace("{device}", f"dev{d:04d}"),
                    encode_frame(x, t0=j * per_message / rate_hz, dt=1.0 / rate_hz), "sample"))
    return Plan(out, {})


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (pid None) or of a child still running."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_drain(port: int, p: Plan) -> tuple:
    """(wall seconds, CPU seconds) a bare paho subscriber takes to drain the plan's backlog (QoS 1)."""
    open_session("bare", port, "sensors/+/imu")
    publish(p, port=port, client_id="bench-pub", realtime=False)
    n, got = len(p.messages), [0]
    c = client("bare", port)
    start = [None]

    def on_message(cl, userdata, msg):
        if start[0] is None:
            start[0] = (time.perf_counter(), cpu_s())
        got[0] += 1
        if got[0] == n:
            cl.disconnect()
    c.on_message = on_message
    c.loop_forever()
    return time.perf_counter() - start[0][0], cpu_s() - start[0][1]


class DaemonRun:
    def __init__(self, port: int, folder: Path, client_id: str):
        self.metrics_port = free_port()
        (folder / "state").mkdir(parents=True, exist_ok=True)
        sets = [f"broker.port={port}", f"broker.client_id={client_id}", f'state.dir="{folder / "state"}"',
                f"metrics.port={self.metrics_port}", 'metrics.stats_topic=""', "pipeline.0.max_streams=1024",
                'pipeline.0.output_format="binary"']
        self.log = open(folder / "daemon.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", "examples/edge.toml",
                                      *sum((["--set", s] for s in sets), [])], stdout=self.log, stderr=self.log)

    def samples_done(self) -> float | None:
        """Samples published or dropped by the order rule so far (None until /metrics answers)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(("edge_samples_out_total", "edge_samples_dropped_total")))

    def wait_up(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.samples_done() is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the daemon did not come up; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def daemon_drain(port: int, folder: Path, p: Plan, samples: int) -> tuple:
    """(wall seconds, CPU seconds of the daemon) from its first published output to the last, scaled to
    the whole backlog."""
    open_session("edge-bench", port, "sensors/+/imu")
    publish(p, port=port, client_id="bench-pub", realtime=False)
    d = DaemonRun(port, folder, "edge-bench")
    try:
        d.wait_up()
        first = last = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            n = d.samples_done() or 0.0
            now, cpu = time.perf_counter(), cpu_s(d.proc.pid)
            if n > 0 and first is None:
                first = (now, n, cpu)
            if n >= samples:
                last = (now, n, cpu)
                break
            time.sleep(0.05)
        if first is None or last is None:
            raise RuntimeError(f"the daemon got through {n:.0f} of {samples} samples; see {folder / 'daemon.log'}")
        # the first poll that saw outputs already missed some: count only what came after it
        scale = samples / (last[1] - first[1])
        return (last[0] - first[0]) * scale, (last[2] - first[2]) * scale
    finally:
        d.stop()


def latency(port: int, folder: Path, devices: int, per_message: int, rate: float, seconds: float) -> tuple:
    """p50, p99 (ms) of output receive time minus sample send time, paced at `rate` samples/s."""
    d = DaemonRun(port, folder, "edge-bench-live")
    lat, lock = [], threading.Lock()
    sub = client("bench-sub", port, clean=True)

    def on_message(cl, userdata, msg):
        now = time.time()
        t = decode_frame(msg.payload, 4, 65535)[0]
        with lock:
            lat.extend(now - t)
    sub.on_message = on_message
    sub.subscribe("attitude/#", qos=1)
    sub.loop_start()
    try:
        d.wait_up()
        time.sleep(1.0)
        interval = per_message / rate                 # seconds between messages, all devices together
        n = int(seconds / interval)
        x = np.zeros((per_message, 6), np.float32)
        x[:, 2] = 9.81
        pub = client("bench-live-pub", port, clean=True)
        pub.loop_start()
        start = time.monotonic()
        for k in range(n):
            delay = start + k * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time()       # stamped at send: the samples of a frame 1 µs apart
            info = pub.publish(TOPIC.replace("{device}", f"dev{k % devices:04d}"),
                               encode_frame(x, t0=now, dt=1e-6), qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS,):
                raise RuntimeError(f"publish: {mqtt.error_string(info.rc)}")
        time.sleep(2.0)
        pub.disconnect()
        pub.loop_stop()
    finally:
        sub.disconnect()
        sub.loop_stop()
        d.stop()
    with lock:
        a = np.array(lat) * 1e3
    if len(a) == 0:
        return float("nan"), float("nan"), 0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), len(a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller backlogs and shorter paced runs")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--paced-rate", type=float, default=None,
                    help="samples/s in the latency runs (default 2000 single, 20000 batched)")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    single_msgs, batch_msgs, seconds = (8000, 1500, 2.0) if args.quick else (30000, 6000, 4.0)
    kinds = [("single", 1, single_msgs), ("batch50", 50, batch_msgs)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        tmp = Path(tmp)
        for kind, per_message, messages in kinds:
            broker = Broker(tmp / f"broker-bare-{kind}").start()
            try:
                secs, cpu = bare_drain(broker.port, backlog(1, messages, per_message))
            finally:
                broker.stop()
            samples = messages * per_message
            bare, bare_cpu = samples / secs, samples / cpu
            print(f"bare paho drain, {kind}: {messages / secs:,.0f} msg/s = {bare:,.0f} samples/s, "
                  f"{1e6 * cpu / messages:.0f} CPU-µs per message", file=sys.stderr)
            for devices in args.devices:
                folder = tmp / f"{kind}-{devices}"
                broker = Broker(folder / "broker").start()
                try:
                    secs, cpu = daemon_drain(broker.port, folder / "drain", backlog(devices, messages, per_message),
                                             samples)
                    rate = args.paced_rate or (2000.0 if per_message == 1 else 20000.0)
                    p50, p99, n = latency(broker.port, folder / "live", devices, per_message, rate, seconds)
                finally:
                    broker.stop()
                row = {"payload": kind, "devices": devices, "samples_per_message": per_message,
                       "bare_samples_per_s": round(bare), "daemon_samples_per_s": round(samples / secs),
                       "ratio": round(samples / secs / bare, 3), "bare_samples_per_cpu_s": round(bare_cpu),
                       "daemon_samples_per_cpu_s": round(samples / cpu), "cpu_ratio": round(samples / cpu / bare_cpu, 3),
                       "paced_samples_per_s": rate,
                       "latency_p50_ms": round(p50, 2), "latency_p99_ms": round(p99, 2), "latency_samples": n}
                rows.append(row)
                print(f"  {devices:>5} devices: daemon {row['daemon_samples_per_s']:>10,} samples/s "
                      f"(x{row['ratio']:.2f} of bare; per CPU-s x{row['cpu_ratio']:.2f})  latency p50 {p50:.2f} ms  "
                      f"p99 {p99:.2f} ms", file=sys.stderr)
    print(f"\n{'payload':<8} {'devices':>7} {'bare samples/s':>15} {'daemon samples/s':>17} {'ratio':>6} "
          f"{'bare /CPU-s':>12} {'daemon /CPU-s':>14} {'ratio':>6} {'paced/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for r in rows:
        print(f"{r['payload']:<8} {r['devices']:>7} {r['bare_samples_per_s']:>15,} {r['daemon_samples_per_s']:>17,} "
              f"{r['ratio']:>6.2f} {r['bare_samples_per_cpu_s']:>12,} {r['daemon_samples_per_cpu_s']:>14,} "
              f"{r['cpu_ratio']:>6.2f} {r['paced_samples_per_s']:>8,.0f} {r['latency_p50_ms']:>7.2f} "
              f"{r['latency_p99_ms']:>7.2f}")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
