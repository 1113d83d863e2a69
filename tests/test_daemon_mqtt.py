"""`edge run` against a real mosquitto on loopback, fed by `edge sim imu` plans.

Every test compares the daemon's published outputs with what `edge replay` (edge.replay.replay)
computes offline for the same samples (the devices send at 200 Hz, the bundle steps at 285.714 Hz,
so both resample), sample by sample, to 1e-5.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

import edge
from edge.daemon.payload import decode_outputs_json
from edge.firmware_sim.mqtt_sim import Faults, Plan, device_name, plan, publish
from mqtt_broker import MOSQUITTO, Broker, free_port
from test_daemon_units import replayed

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (apt-get install -y mosquitto)")

GAP_S = 0.5


@pytest.fixture(scope="module")
def model():
    return edge.load("imu-attitude")


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


class Collector:
    """Subscribes to the outputs with its own persistent session, so an outage loses none of them."""

    def __init__(self, port: int, topics=("attitude/#",)):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.got, self.other, self.lock = {}, [], threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{port}",
                             protocol=MQTTProtocolVersion.MQTTv5)
        self.c.reconnect_delay_set(0.2, 1.0)
        self.c.on_connect = lambda c, u, f, r, p: c.subscribe([(t, 1) for t in topics])
        self.c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.c.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        if not msg.topic.startswith("attitude/"):
            with self.lock:
                self.other.append((msg.topic, msg.payload))
            return
        t, y = decode_outputs_json(msg.payload)
        with self.lock:
            self.got.setdefault(msg.topic.split("/")[-1], []).append((t, y))

    def outputs(self, device):
        with self.lock:
            parts = list(self.got.get(device, []))
        if not parts:
            return np.zeros(0), np.zeros((0, 4), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def wait_for(self, want: dict, timeout_s: float) -> None:
        """Until every device has an output for each of its wanted timestamps (or the time is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(np.isin(t, self.outputs(d)[0]).all() for d, (t, _) in want.items()):
                return
            time.sleep(0.1)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Daemon:
    """`edge run` as a child process, with a NOTIFY_SOCKET bound here to see what it tells systemd."""

    def __init__(self, tmp_path, broker_port, *overrides, watchdog_usec=0):
        self.tmp, self.metrics_port = tmp_path, free_port()
        self.state = tmp_path / "state"
        self.state.mkdir(exist_ok=True)
        self.config = tmp_path / "edge.toml"
        if not self.config.exists():
            self.config.write_text(open("examples/edge.toml").read())
        self.sets = [f"broker.port={broker_port}", "broker.client_id=edge-test", "broker.reconnect_min_s=0.2",
                     "broker.reconnect_max_s=1.0", f'state.dir="{self.state}"', "state.interval_s=0.5",
                     f"metrics.port={self.metrics_port}", "metrics.stats_interval_s=1", *overrides]
        self.notify_path = str(tmp_path / f"notify-{time.monotonic_ns()}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.1)
        self.log = open(tmp_path / "daemon.log", "ab")
        env = {**os.environ, "NOTIFY_SOCKET": self.notify_path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(self.config),
                                      *sum((["--set", s] for s in self.sets), [])],
                                     stdout=self.log, stderr=self.log, env=env)
        self.notes = []

    def read_notes(self, until: str | None = None, timeout_s: float = 30.0) -> list:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.notes.append(self.notify.recv(4096).decode())
            except socket.timeout:
                if until is None:
                    return self.notes
            if until is not None and any(n.startswith(until) for n in self.notes):
                return self.notes
            assert self.proc.poll() is None or until is None, self.log_text()
        raise AssertionError(f"no {until} within {timeout_s} s; got {self.notes}\n{self.log_text()}")

    def wait_ready(self):
        self.read_notes("READY=1")
        return self

    def metrics(self) -> dict:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        self.read_notes()                     # what it said on the way out
        self.notify.close()
        self.log.close()
        return rc

    def log_text(self) -> str:
        return (self.tmp / "daemon.log").read_text()[-3000:]


def expected(model, p):
    return {d: replayed(model, t, x, GAP_S) for d, (t, x) in p.accepted.items()}


def check_outputs(collector, want, exactly_once=True, context=""):
    for device, (t, y) in want.items():
        got_t, got_y = collector.outputs(device)
        missing = np.setdiff1d(t, got_t)
        where = f"{device}: {len(got_t)} outputs for {len(t)} fed samples, none for t = {missing[:10]} {context}"
        if exactly_once:        # one output per fed sample, in order
            assert np.array_equal(got_t, t), where
        else:                   # at least once: every copy right, every sample covered
            assert np.array_equal(np.unique(got_t), t), where
        idx = np.searchsorted(t, got_t)
        assert np.abs(got_y - y[idx]).max() < 1e-5, device


def test_twenty_devices_at_200_hz_outputs_equal_the_offline_computation(tmp_path, broker, model):
    p = plan(20, 200.0, 10.0, samples_per_message=5, fmt="binary", seed=1)
    want = expected(model, p)
    collector = Collector(broker.port)
    daemon = Daemon(tmp_path, broker.port).wait_ready()
    sent = publish(p, port=broker.port, client_id="sim-20")
    assert sent["unconfirmed"] == 0
    collector.wait_for(want, 20)
    m = daemon.metrics()
    assert daemon.stop() == 0
    collector.close()
    check_outputs(collector, want)
    fed = sum(len(t) for t, _ in want.values())
    assert fed == 20 * 2001
    assert m['edge_samples_in_total{pipeline="imu"}'] == fed
    assert m['edge_samples_out_total{pipeline="imu"}'] == fed
    assert m['edge_messages_in_total{pipeline="imu"}'] == len(p.messages)
    assert not [k for k in m if k.startswith(("edge_messages_dropped_total", "edge_samples_dropped_total"))]
    # micro-batching: far fewer engine calls than samples
    assert m["edge_engine_seconds_count"] < fed / 10
    assert daemon.notes[-1] == "STOPPING=1"


def streaming(tmp_path, broker, model, p):
    """The expected outputs, a collector, a ready daemon, and the plan being published in a thread."""
    want = expected(model, p)
    collector = Collector(broker.port)
    daemon = Daemon(tmp_path, broker.port).wait_ready()
    sender = threading.Thread(target=publish, args=(p,), kwargs={"port": broker.port, "client_id": "sim"})
    sender.start()
    return want, collector, daemon, sender


def test_kill_9_then_restart_resumes_from_the_checkpoint_without_loss(tmp_path, broker, model):
    p = plan(10, 200.0, 8.0, samples_per_message=5, fmt="json", seed=2)
    want, collector, first, sender = streaming(tmp_path, broker, model, p)
    time.sleep(3.0)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = Daemon(tmp_path, broker.port).wait_ready()
    sender.join()
    collector.wait_for(want, 20)
    assert second.stop() == 0
    collector.close()
    log = second.log_text()
    assert "10 devices restored" in log, log
    # outputs are at-least-once across the crash: each sample has outputs, and all of them are right,
    # including those computed again from the checkpointed state after the restart
    check_outputs(collector, want, exactly_once=False)


def test_broker_down_five_seconds_then_back_loses_nothing(tmp_path, broker, model):
    p = plan(10, 200.0, 10.0, samples_per_message=5, fmt="binary", seed=3)
    want, collector, daemon, sender = streaming(tmp_path, broker, model, p)
    time.sleep(2.5)
    broker.stop()
    time.sleep(5.0)
    broker.start()
    sender.join()
    collector.wait_for(want, 30)
    m = daemon.metrics()
    assert daemon.stop() == 0
    collector.close()
    assert m["edge_mqtt_connects_total"] >= 2 and m["edge_mqtt_connected"] == 1
    assert "session present: True" in daemon.log_text()      # the broker kept our session through its restart
    check_outputs(collector, want, exactly_once=False, context=str({k: v for k, v in m.items() if "samples" in k}))


def test_faults_are_counted_and_do_not_touch_the_good_devices(tmp_path, broker, model):
    faults = Faults(jitter_s=0.01, dropout=0.01, nan=0.03, saturation=0.02, duplicate=0.03, reorder=0.03,
                    garbage=0.03, new_ids=10000)
    p = plan(10, 200.0, 6.0, samples_per_message=5, fmt="json", faults=faults, seed=4)
    want = expected(model, p)
    collector = Collector(broker.port)
    daemon = Daemon(tmp_path, broker.port, "pipeline.0.max_streams=64", "state.idle_evict_s=60").wait_ready()
    rss_before = _rss_kib(daemon.proc.pid)
    publish(p, port=broker.port, client_id="sim-faults")
    collector.wait_for(want, 20)
    time.sleep(1.5)                                   # the last gauges are set by the housekeeping pass
    m = daemon.metrics()
    rss_after = _rss_kib(daemon.proc.pid)
    assert daemon.stop() == 0
    collector.close()
    check_outputs(collector, want)

    # what the plan sent, counted independently of the daemon
    kinds = p.counts
    assert min(kinds.get(k, 0) for k in ("garbage", "duplicate", "reordered", "nan", "saturation", "dropout")) > 0
    sent_samples = sum(len(t) for t, _ in p.accepted.values())
    drops = lambda reason: m.get(f'edge_samples_dropped_total{{pipeline="imu",reason="{reason}"}}', 0)
    dropped = lambda reason: m.get(f'edge_messages_dropped_total{{pipeline="imu",reason="{reason}"}}', 0)
    assert drops("duplicate") == kinds["duplicate_samples"] == 5 * kinds["duplicate"]
    assert drops("out_of_order") == kinds["late_samples"] > 0
    nan_rows = sum(int((~np.isfinite(x).all(axis=1)).sum()) for _, x in p.accepted.values())
    assert m['edge_samples_not_fed_total{pipeline="imu"}'] == nan_rows
    assert m['edge_samples_in_total{pipeline="imu"}'] == sent_samples - nan_rows + 64 - 10
    garbage = {"bad_json": 0, "bad_frame": 0, "bad_time": 0, "wrong_channels": 0}
    for kind, reason in zip(("random_bytes", "cut_json", "bad_frame_length", "no_timestamp", "wrong_channels"),
                            ("bad_json", "bad_json", "bad_frame", "bad_time", "wrong_channels")):
        garbage[reason] += sum(1 for k in range(kinds["garbage"]) if k % 5 == ("random_bytes", "cut_json",
                               "bad_frame_length", "no_timestamp", "wrong_channels").index(kind))
    assert {r: dropped(r) for r in garbage} == garbage
    # 10,000 new ids: 54 take the free slots (max_streams 64, 10 devices), the rest are refused
    assert dropped("refused_max_streams") == 10000 - 54
    assert m['edge_active_streams{pipeline="imu"}'] == 64
    assert m['edge_gap_resets_total{pipeline="imu"}'] >= 1
    # numbered samples: a dropout's are skipped numbers, and so are a reordered message's until it comes late
    missing = m['edge_samples_missing_total{pipeline="imu"}']
    assert kinds["late_samples"] <= missing <= kinds["late_samples"] + kinds["dropout_samples"]
    assert rss_after - rss_before < 30_000, f"RSS grew by {rss_after - rss_before} KiB"


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_sighup_reload_swaps_the_bundle_keeps_state_and_systemd_hears_it(tmp_path, broker, model):
    p = plan(3, 200.0, 4.0, samples_per_message=10, fmt="binary", seed=5)
    want = expected(model, p)
    half = {d: (t[t < 2.0], None) for d, (t, _) in want.items()}
    collector = Collector(broker.port, ("attitude/#", "edge/+/stats"))
    daemon = Daemon(tmp_path, broker.port, watchdog_usec=200_000).wait_ready()
    early = [m for m in p.messages if m[0] < 1.9]
    late = [m for m in p.messages if m[0] >= 1.9]
    publish(Plan(early, {}), port=broker.port, client_id="sim-hup", realtime=False)
    collector.wait_for(half, 10)
    # the same weights under another path: a bundle swap with an unchanged state layout keeps every device's state
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(open(model.bundle.path, "rb").read())
    daemon.config.write_text(daemon.config.read_text().replace('bundle = "imu-attitude"', f'bundle = "{copy}"'))
    notes, daemon.notes = daemon.notes, []             # from here on, what the reload says
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.read_notes("RELOADING=1", 10)
    daemon.read_notes("READY=1", 10)
    publish(Plan(late, {}), port=broker.port, client_id="sim-hup", realtime=False)
    collector.wait_for(want, 10)
    # a bundle that does not load: refused, the running pipeline stays
    daemon.config.write_text(daemon.config.read_text().replace(f'bundle = "{copy}"', 'bundle = "/nonexistent.onnx"'))
    notes, daemon.notes = notes + daemon.notes, []
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.read_notes("READY=1", 10)
    m = daemon.metrics()
    assert m['edge_reloads_total{result="refused"}'] == 1 and "reload refused" in daemon.log_text()
    assert daemon.stop() == 0
    collector.close()
    check_outputs(collector, want)          # continuous across the reload: the state was not reset
    assert m['edge_reloads_total{result="applied"}'] == 1
    stats = [json.loads(payload) for topic, payload in collector.other if topic == "edge/edge-test/stats"]
    assert stats and stats[-1]["edge_samples_in_total"]["imu"] <= sum(len(t) for t, _ in want.values())
    assert "reloaded" in daemon.log_text() and str(copy) in daemon.log_text()
    notes += daemon.notes
    said = [n for n in notes if n != "WATCHDOG=1"]
    assert said[0].startswith("READY=1") and said[-1] == "STOPPING=1"
    assert sum(n == "WATCHDOG=1" for n in notes) >= 3
    assert sum(n.startswith("RELOADING=1\nMONOTONIC_USEC=") for n in notes) == 2
    # the final checkpoint holds the three devices, readable by the state table
    from edge.engine.state_table import StateTable
    fp = repr([(s["name"], s["shape"]) for s in model.meta["state"]])
    table = StateTable.load(daemon.state / "imu.state.npz", model.init_state(1)[0], fingerprint=fp)
    assert sorted(table.ids()) == [device_name(i) for i in range(3)]
    # the state is at the last grid point (t0 + k / 285.714 Hz) at or before the last input; beside it,
    # the device's grid continues from that input
    t = want[device_name(0)][0]
    rate = model.meta["sample_rate_hz"]
    assert table.last_seen(device_name(0)) == t[0] + np.floor((t[-1] - t[0]) * rate) / rate
    grids = json.loads((daemon.state / "imu.state.npz.grid.json").read_text())
    assert grids[device_name(0)]["resampler"]["prev_t"] == t[-1]


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nport = 0\n")
    r = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"edge run: {bad}: broker.port: 0: not a TCP port"]


def test_sim_command_publishes_its_plan(broker):
    got = []
    sub = Collector(broker.port, ("sensors/#",))
    r = subprocess.run([sys.executable, "-m", "edge.cli", "sim", "imu", "--devices", "3", "--rate", "100",
                        "--duration", "1", "--samples-per-message", "4", "--format", "json",
                        "--broker", f"127.0.0.1:{broker.port}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 5
    while len(got) < 78 and time.monotonic() < deadline:       # 3 devices x ceil(101 / 4) messages
        with sub.lock:
            got = list(sub.other)
        time.sleep(0.05)
    sub.close()
    assert len(got) == 78 and "sent 78 messages" in r.stdout
    samples = [s for _, payload in got for s in json.loads(payload)]
    assert len(samples) == 303 and set(samples[0]) == {"t", "seq", "acc", "gyr"}
    assert [json.loads(payload)[0]["seq"] for _, payload in got[:3]] == [0, 0, 0]       # 3 devices' first ones
    bad = subprocess.run([sys.executable, "-m", "edge.cli", "sim", "imu", "--broker", "nowhere"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("edge sim imu: --broker 'nowhere': expected HOST:PORT")


def test_stock_broker_limits_drop_samples_during_a_restart_and_the_daemon_counts_every_one(tmp_path, model):
    """mosquitto's stock limits (1000 queued per client) drop QoS 1 messages while the daemon restarts;
    the devices number their samples, so the daemon reports exactly the samples that never arrived."""
    broker = Broker(tmp_path / "broker", limits=None).start()
    try:
        p = plan(5, 200.0, 10.0, samples_per_message=1, fmt="json", seed=6)       # 1,000 messages/s
        collector = Collector(broker.port)
        first = Daemon(tmp_path, broker.port).wait_ready()
        sender = threading.Thread(target=publish, args=(p,), kwargs={"port": broker.port, "client_id": "sim-stock"})
        sender.start()
        time.sleep(3.0)
        assert first.stop() == 0
        time.sleep(4.0)
        second = Daemon(tmp_path, broker.port).wait_ready()
        sender.join()
        last = {d: (t[-1:], None) for d, (t, _) in p.accepted.items()}
        collector.wait_for(last, 20)                       # every device's last sample is through
        time.sleep(1.0)
        m = second.metrics()
        assert second.stop() == 0
        collector.close()
        log = second.log_text()
    finally:
        broker.stop()
    # what was really dropped: the planned samples that have no output (every sample that arrives has one)
    really = 0
    for device, (t, _) in p.accepted.items():
        got = np.unique(collector.outputs(device)[0])
        assert np.isin(got, t).all()
        really += len(t) - len(got)
    assert really > 100, f"the broker dropped only {really} samples: the restart did not overflow its queue"
    assert m['edge_samples_missing_total{pipeline="imu"}'] == really
    devices = m['edge_devices_with_missing_samples_total{pipeline="imu"}']
    assert 1 <= devices <= 5
    assert log.count("samples missing") == devices           # one warning per device, not one per gap
