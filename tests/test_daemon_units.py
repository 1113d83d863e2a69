"""The daemon's parts without a broker: config validation, payload codecs, the pipeline's rules."""
import json
import math
import struct

import numpy as np
import pytest

import edge
from edge.daemon.config import ConfigError, load_config, topic_filter
from edge.daemon.payload import Decoder, JsonLayout, PayloadError, decode_frame, encode_frame
from edge.daemon.pipeline import Pipeline
from edge.daemon.service import Metrics
from edge.io.recordings import Recording, find_gaps, resample
from edge.replay import replay
from edge.io.resample import StreamResampler

IMU = ["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"]


# ------------------------------------------------------------------------------------ config

def write(tmp_path, text):
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def test_example_config_loads_and_overrides_apply():
    cfg = load_config("examples/edge.toml", ["broker.port=1884", "broker.host=10.0.0.2", "pipeline.0.every=4",
                                             "state.interval_s=2"])
    assert (cfg.broker.port, cfg.broker.host, cfg.pipelines[0].every, cfg.state.interval_s) == (1884, "10.0.0.2", 4, 2.0)
    assert topic_filter(cfg.pipelines[0].topic) == "sensors/+/imu"


@pytest.mark.parametrize("text, key", [
    ("[broker]\nport = 70000\n", "broker.port"),
    ("[broker]\nport = \"x\"\n", "broker.port"),
    ("[broker]\nprot = 1\n", "broker.prot"),
    ("[[pipeline]]\ntopic = \"sensors/+/imu\"\n", "pipeline[0].topic"),
    ("[[pipeline]]\nqos = 2\n", "pipeline[0].qos"),
    ("[[pipeline]]\nevery = 0\n", "pipeline[0].every"),
    ("[[pipeline]]\nname = \"a\"\n[[pipeline]]\nname = \"a\"\ntopic = \"x/{device}\"\n", "pipeline[1].name"),
    ("[limits]\nqueue_messages = 10\n", "limits.queue_messages"),
    ("[state]\nidle_evict_s = 0.1\n", "state.idle_evict_s"),
    ("[broker]\npassword_file = \"/nonexistent/pw\"\n", "broker.password_file"),
    ("[nonsense]\n", "nonsense"),
    ("broker = [\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert key in str(e.value) and str(tmp_path) in str(e.value)
    assert "\n" not in str(e.value)


def test_override_errors(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["broker.port"])
    with pytest.raises(ConfigError, match=r"pipeline\[0\].every"):
        load_config(path, ["pipeline.0.every=-1"])
    with pytest.raises(ConfigError, match="1 entries, no \\[3\\]"):
        load_config(path, ["pipeline.3.every=2"])


# ------------------------------------------------------------------------------------ payloads

def test_frame_layout_matches_the_documented_bytes():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    data = encode_frame(x, t0=1.5, dt=0.005)
    # the layout of docs/daemon.md, packed independently
    want = b"EF" + bytes([1, 0]) + struct.pack("<HHdd", 6, 2, 1.5, 0.005) + struct.pack("<12f", *range(12))
    assert data == want
    t, y = decode_frame(data, 6, 100)
    assert t.tolist() == [1.5, 1.505] and np.array_equal(y, x)
    explicit = encode_frame(x, t=[3.0, 7.25])
    assert explicit[3] == 1 and struct.unpack_from("<2d", explicit, 24) == (3.0, 7.25)
    assert decode_frame(explicit, 6, 100)[0].tolist() == [3.0, 7.25]
    with pytest.raises(PayloadError, match="magic"):                # format = "binary": no JSON fallback
        Decoder("binary", IMU, 100, 4096)(b"XY" + data[2:])


@pytest.mark.parametrize("data, reason", [
    (b"EF", "bad_frame"),                                                    # shorter than the header
    (b"EF" + bytes([2, 0]) + struct.pack("<HHdd", 6, 1, 0, 0) + bytes(24), "bad_frame"),   # version
    (b"EF" + bytes([1, 0]) + struct.pack("<HHdd", 5, 1, 0, 0) + bytes(20), "wrong_channels"),
    (b"EF" + bytes([1, 0]) + struct.pack("<HHdd", 6, 2, 0, 0.01) + bytes(40), "bad_frame"),  # length
    (b"EF" + bytes([1, 0]) + struct.pack("<HHdd", 6, 2, 0, -1) + bytes(48), "bad_time"),
    (b"EF" + bytes([1, 0]) + struct.pack("<HHdd", 6, 2, math.nan, 0.01) + bytes(48), "bad_time"),
    (b"EF" + bytes([1, 0]) + struct.pack("<HHdd", 6, 200, 0, 0.01) + bytes(4800), "too_many_samples"),
    (b"\xff\xfe garbage", "bad_json"),
    (b'{"t": 1, "acc": [0, 0, 9.8], "gyr": [0, 0]', "bad_json"),
    (b'{"t": 1, "acc": [0, 0, 9.8], "gyr": [0, 0]}', "wrong_channels"),
    (b'{"t": 1, "x": [0, 0, 9.8, 0, 0, 0, 0]}', "wrong_channels"),
    (b'{"t": 1, "acc": [0, 0, "x"], "gyr": [0, 0, 0]}', "bad_schema"),
    (b'{"t": true, "x": [0, 0, 9.8, 0, 0, 0]}', "bad_time"),
    (b'{"acc": [0, 0, 9.8], "gyr": [0, 0, 0]}', "bad_time"),
    (b'[]', "bad_schema"),
    (b'17', "bad_schema"),
    (b'x' * 9000, "too_large"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_payloads_have_a_reason(data, reason):
    with pytest.raises(PayloadError) as e:
        Decoder("auto", IMU, max_samples=100, max_bytes=8192)(data)
    assert e.value.reason == reason


def test_json_forms_decode_to_the_same_samples():
    dec = Decoder("auto", IMU, 100, 4096)
    grouped = b'[{"t": 1.0, "acc": [1, 2, 3], "gyr": [4, 5, null]}, {"t": 1.01, "acc": [7, 8, 9], "gyr": [1, 1, 1]}]'
    flat = json.dumps([{"t": 1.0, "x": [1, 2, 3, 4, 5, None]}, {"t": 1.01, "x": [7, 8, 9, 1, 1, 1]}]).encode()
    for data in (grouped, flat, JsonLayout(IMU).encode([1.0, 1.01], [[1, 2, 3, 4, 5, np.nan], [7, 8, 9, 1, 1, 1]])):
        t, x, seq = dec(data)
        assert seq is None
        assert t.tolist() == [1.0, 1.01]
        assert np.array_equal(x, np.array([[1, 2, 3, 4, 5, np.nan], [7, 8, 9, 1, 1, 1]], np.float32), equal_nan=True)


# ------------------------------------------------------------------------------------ pipeline rules

@pytest.fixture(scope="module")
def model():
    return edge.load("imu-attitude")


def make_pipeline(model, **over):
    cfg = load_config(None, [f"pipeline.0.{k}={v}" for k, v in over.items()])
    return Pipeline(cfg.pipelines[0], cfg.limits, 30.0, Metrics(), model=model), cfg


BUNDLE_HZ = 285.714      # imu-attitude's sample_rate_hz: devices at this rate are fed directly


def imu_samples(n, seed, t0=0.0, rate=BUNDLE_HZ):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 0.3, (n, 3)) + [0, 0, 9.81], rng.normal(0, 0.2, (n, 3))], axis=1)
    return t0 + np.arange(n) / rate, x.astype(np.float32)


def offline(model, t, x, gap_s):
    """The documented rule computed independently: NaN rows not fed, reset after a gap, and after a
    reset the attitude's first second settled (gravity memory = running mean of x1, written out here)."""
    fed = np.isfinite(x).all(axis=1)
    t, x = t[fed], x[fed]
    cuts = np.flatnonzero(np.diff(t) > gap_s) + 1
    ys = [model.block(seg[:, None, :], model.init_state(1))[:, 0].copy() if k == 0 else settled(model, seg)
          for k, seg in enumerate(np.split(x, cuts))]
    return t, np.concatenate(ys)


def settled(model, x):
    """One stream from a reset: for its first second, one step at a time, the filter memories x1, x2,
    y1, y2 set to the mean of the x1 (this sample's earth-frame acc) since the reset; then blocks."""
    at, where = 0, {}
    for s in model.meta["state"]:
        where[s["name"]] = slice(at, at + int(np.prod(s["shape"])))
        at += int(np.prod(s["shape"]))
    state = model.init_state(1)
    state[0, where["filter.started"]] = -1.0                # reset, not a first start
    n = min(len(x), int(1.0 * model.meta["sample_rate_hz"]))
    ys = []
    for k in range(1, n + 1):
        ys.append(model.step(x[k - 1:k], state)[0].copy())
        y1, x1 = state[0, where["filter.y1"]], state[0, where["filter.x1"]]
        mean = y1 + (x1 - y1) / np.float32(k)
        for m in ("filter.x1", "filter.x2", "filter.y1", "filter.y2"):
            state[0, where[m]] = mean
        state[0, where["filter.started"]] = k + 2
    state[0, where["filter.started"]] = 1.0 if n == int(1.0 * model.meta["sample_rate_hz"]) else n + 2
    rest = model.block(x[n:, None, :], state)[:, 0].copy() if len(x) > n else np.empty((0, 4), np.float32)
    return np.concatenate([np.array(ys).reshape(-1, 4), rest])


def replayed(model, t, x, gap_s, rate_hz=200.0):
    """What `edge replay` computes for the same samples (resampled to the bundle's rate when the rates
    differ), one row per fed sample; rows it leaves NaN (no fed grid sample yet) have no output."""
    rec = Recording(t=t, channels=IMU, x=x, units=["m/s^2"] * 3 + ["rad/s"] * 3, rate_hz=rate_hz,
                    meta={"gap_s": gap_s})
    rec.gaps = find_gaps(rec.t, rec.valid, gap_s)
    res = replay(rec, model)
    keep = np.isfinite(x).all(axis=1) & np.isfinite(res.y).all(axis=1)
    return t[keep], res.y[keep]


def test_pipeline_applies_order_nan_and_gap_rules(model):
    pipe, cfg = make_pipeline(model)
    t, x = imu_samples(300, 0)
    t[200:] += 1.0                              # a 1 s gap: reset
    x[50:60] = np.nan                           # a short NaN run: held
    frames = [encode_frame(x[a:a + 10], t=t[a:a + 10]) for a in range(0, 300, 10)]
    sent = frames[:5] + [frames[3]] + frames[5:8] + [frames[9], frames[8]] + frames[10:]   # a duplicate, a late one
    out_t, out_y = [], []
    for k, f in enumerate(sent):
        pipe.accept("dev", f, now=float(k))
        if k % 3 == 2 or k == len(sent) - 1:   # engine rounds at arbitrary points
            for dev, (tt, yy) in pipe.advance().items():
                out_t.append(tt)
                out_y.append(yy)
    late = np.r_[80:90]                         # frames[8] came after frames[9]: out of order, dropped
    want_t, want_y = offline(model, np.delete(t, late), np.delete(x, late, axis=0), cfg.pipelines[0].gap_s)
    assert np.array_equal(np.concatenate(out_t), want_t)
    assert np.abs(np.concatenate(out_y) - want_y).max() < 1e-5
    m = pipe.counters
    assert m.samples_dropped.get("imu", "duplicate") == 10 and m.samples_dropped.get("imu", "out_of_order") == 10
    assert m.not_fed.get("imu") == 10 and m.gap_resets.get("imu") == 1


def test_many_devices_advance_together_with_different_lengths(model):
    pipe, cfg = make_pipeline(model)
    data = {f"d{i}": imu_samples(16 + 7 * i, i) for i in range(6)}     # 16+: the rate is known at once
    for dev, (t, x) in data.items():
        pipe.accept(dev, encode_frame(x, t=t), now=0.0)
    calls = []
    out = pipe.advance(calls.append)
    assert len(calls) == 6                       # one block call per distinct run length, not per device or sample
    for dev, (t, x) in data.items():
        want_t, want_y = offline(model, t, x, 0.5)
        assert np.array_equal(out[dev][0], want_t) and np.abs(out[dev][1] - want_y).max() < 1e-5


def test_max_streams_refuses_new_devices_until_one_is_idle(model):
    pipe, cfg = make_pipeline(model, max_streams=3)
    t, x = imu_samples(2, 0)
    for k in range(3):
        pipe.accept(f"d{k}", encode_frame(x, t=t), now=0.0)
    with pytest.raises(PayloadError) as e:
        pipe.accept("new", encode_frame(x, t=t), now=1.0)
    assert e.value.reason == "refused_max_streams"
    pipe.advance()
    pipe.accept("d1", encode_frame(x, t=t + 1), now=20.0)
    pipe.accept("d2", encode_frame(x, t=t + 1), now=20.0)
    pipe.advance()
    pipe.accept("new", encode_frame(x, t=t), now=31.0)          # d0 silent for 31 s > idle_evict_s 30
    assert list(pipe.devices) == ["d1", "d2", "new"] and len(pipe.table) <= 3
    assert pipe.counters.evicted.get("imu") == 1


def test_decimation_keeps_every_nth_output(model):
    pipe, _ = make_pipeline(model, every=3)
    t, x = imu_samples(30, 1)
    got = []
    for a, b in ((0, 16), (16, 23), (23, 30)):         # the first 16 samples decide the device's rate
        pipe.accept("d", encode_frame(x[a:b], t=t[a:b]), now=0.0)
        got.append(pipe.advance()["d"][0])
    assert np.array_equal(np.concatenate(got), t[::3])


def test_a_device_off_the_bundles_rate_is_counted_and_named_once(model, caplog):
    import logging
    p, _ = make_pipeline(model)
    p.log = logging.getLogger("edge.daemon.test")
    bundle_rate = model.meta["sample_rate_hz"]
    for device, rate in (("slow", 200.0), ("exact", bundle_rate), ("jittery", bundle_rate * 1.003)):
        t, x = imu_samples(40, seed=1, rate=rate)
        for k in range(0, 40, 5):                       # several messages, so the check spans them
            p.accept(device, encode_frame(x[k:k + 5], t=t[k:k + 5]), now=0.0)
    mismatched = p.counters.rate_mismatch.values()
    assert sum(mismatched.values()) == 1                # 200 Hz only: 0.3 % is within the 0.5 % tolerance
    warnings = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert len(warnings) == 1 and "device slow sends at 200 Hz" in warnings[0]


# ------------------------------------------------------------------------------------ resampling

def test_stream_resampler_equals_offline_resample_bit_for_bit():
    rng = np.random.default_rng(3)
    n, rate = 900, 2000 / 7.0001
    t, x = imu_samples(n, 3, t0=5.0, rate=200.0)
    t[500:] += 0.8                                      # a gap: not bridged
    x[0] = np.nan                                       # a non-finite first sample, a NaN run, an Inf
    x[100:103] = np.nan
    x[250, 2] = np.inf
    rec = Recording(t=t, channels=IMU, x=x, units=["m/s^2"] * 3 + ["rad/s"] * 3, rate_hz=200.0)
    rec.gaps = find_gaps(rec.t, rec.valid, 0.5)
    want = resample(rec, rate)
    r = StreamResampler(rate, 0.5)
    cuts = np.r_[0, np.sort(rng.choice(np.arange(1, n), 150, replace=False)), n]     # messages of 1..~20 samples
    parts = [r.push(t[a:b], x[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    k, tg, xg, j, lag, fed_j = (np.concatenate(c) for c in zip(*parts))
    assert np.array_equal(k, np.arange(len(want.t)))
    assert np.array_equal(tg, want.t)
    assert np.array_equal(xg, want.x.astype(np.float32), equal_nan=True)
    assert np.isnan(xg[(tg > t[499]) & (tg < t[500])]).all()
    # the latest grid point at or before each input, as edge replay maps them
    want_j = np.searchsorted(want.t, t + 1e-9 / rate, side="right") - 1
    assert np.array_equal(j, want_j)
    assert np.array_equal(lag, t - want.t[want_j]) and np.array_equal(fed_j, np.isfinite(want.x[want_j]).all(axis=1))


def test_pipeline_resamples_200_hz_devices_like_edge_replay_across_a_restart(model, tmp_path):
    pipe, cfg = make_pipeline(model)
    gap_s = cfg.pipelines[0].gap_s
    data = {}
    for i in range(3):
        t, x = imu_samples(600, 10 + i, t0=100.0 * i, rate=200.0)
        x[:, 3:] *= 8.0                                 # fast turns: the carried orientation matters
        data[f"d{i}"] = (t, x)
    data["d1"][1][200:204] = np.nan                     # a NaN run
    data["d2"][0][300:] += 1.0                          # a 1 s gap: grid blanked, state reset
    rng = np.random.default_rng(0)
    cuts = {d: np.r_[0, np.sort(rng.choice(np.arange(1, 600), 80, replace=False)), 600] for d in data}
    got = {d: ([], []) for d in data}
    for m in range(81):
        for d, (t, x) in data.items():
            a, b = cuts[d][m], cuts[d][m + 1]
            pipe.accept(d, encode_frame(x[a:b], t=t[a:b]), now=float(m))
        if m % 4 == 3 or m == 80:
            for d, (tt, yy) in pipe.advance().items():
                got[d][0].append(tt)
                got[d][1].append(yy)
        if m == 39:                     # a restart from the checkpoint (taken after an advance): the grid continues
            assert pipe.counters.rate_mismatch.get("imu") == 3
            pipe.save(tmp_path / "imu.npz")
            pipe, _ = make_pipeline(model)
            assert pipe.restore(tmp_path / "imu.npz", now=float(m)) == 3
    for d, (t, x) in data.items():
        want_t, want_y = replayed(model, t, x, gap_s)
        got_t, got_y = np.concatenate(got[d][0]), np.concatenate(got[d][1])
        assert np.array_equal(got_t, want_t), d
        assert np.abs(got_y - want_y).max() < 1e-5, d


# ------------------------------------------------------------------------------------ sequence numbers

def test_frame_with_a_sequence_number_matches_the_documented_bytes():
    x = np.arange(6, dtype=np.float32).reshape(1, 6)
    data = encode_frame(x, t0=2.0, dt=0.005, seq=2 ** 40 + 3)
    want = b"EF" + bytes([1, 2]) + struct.pack("<HHdd", 6, 1, 2.0, 0.005) + struct.pack("<Q", 2 ** 40 + 3) \
        + struct.pack("<6f", *range(6))
    assert data == want
    t, y, seq = Decoder("auto", IMU, 100, 4096)(data)
    assert t.tolist() == [2.0] and np.array_equal(y, x) and seq == 2 ** 40 + 3
    for bad in (b'{"t": 1, "seq": -1, "x": [0, 0, 0, 0, 0, 0]}', b'{"t": 1, "seq": 1.5, "x": [0, 0, 0, 0, 0, 0]}',
                b'{"t": 1, "seq": "7", "x": [0, 0, 0, 0, 0, 0]}'):
        with pytest.raises(PayloadError) as e:
            Decoder("auto", IMU, 100, 4096)(bad)
        assert e.value.reason == "bad_seq"


def test_sequence_gaps_are_counted_as_missing_and_repeats_as_duplicates(model):
    pipe, _ = make_pipeline(model)
    layout = JsonLayout(IMU)
    t, x = imu_samples(60, seed=3)
    # 60 samples, 2 per message (seq = index of the first); messages 5 and 6 (samples 10..13) are lost,
    # message 12 (samples 24, 25) is sent twice, messages 20 and 21 swap places
    order = [k for k in range(30) if k not in (5, 6)]
    order.insert(order.index(12) + 1, 12)
    i = order.index(20)
    order[i], order[i + 1] = order[i + 1], order[i]
    for k in order:
        pipe.accept("d", layout.encode(t[2 * k:2 * k + 2], x[2 * k:2 * k + 2], seq=2 * k), now=0.0)
    c = pipe.counters
    # skipped numbers, written out: 10..13 (lost) and 40, 41 (message 20, until it comes after 21)
    assert c.samples_missing.get("imu") == 4 + 2
    assert c.devices_missing.get("imu") == 1
    assert c.samples_dropped.get("imu", "duplicate") == 2
    assert c.samples_dropped.get("imu", "out_of_order") == 2
    # a restart keeps the numbering: the next gap is measured from the checkpoint
    assert pipe.devices["d"].next_seq == 60
