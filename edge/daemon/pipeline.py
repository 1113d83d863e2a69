"""One subscription's engine side, without MQTT: payloads in, per-device outputs out.

    messages --decode--> samples --order/gap rule--> pending runs --engine rounds--> outputs

Rules applied to each device's samples (the same as `edge.recordings` / `edge replay`):

* A timestamp not later than the device's last one is dropped: as ``duplicate`` when its message
  repeats one of the device's last 8 messages (same first and last timestamp), as ``redelivered``
  when the broker marked it as a re-send, else as ``out_of_order``.
* A sample with NaN/Inf in any channel is **not fed** (no output); the state is held across it.
* A gap — no fed sample for longer than ``gap_s`` — resets the state to the bundle's initial state
  at the first fed sample after it.
* Every fed sample yields exactly one output, in order.
* The daemon does not resample. A device whose rate (measured over its first `RATE_CHECK_SAMPLES`
  samples) differs from the bundle's ``sample_rate_hz`` by more than 0.5 % is counted
  (``rate_mismatch``) and named in one warning: its outputs are computed as if it sampled at the
  bundle's rate, which for the attitude filter means a wrong gyro step.

Micro-batching: all pending samples of all devices advance in as few ``Model.block`` calls as
their run lengths allow. A round takes each device's next gap-free run; the runs are cut into
blocks ``[T, devices, C]`` by increasing length (devices whose run is exhausted leave the block),
so 20 devices with 10 samples each are one call, and 1 device with 50 samples is one call too.

Streams are bounded by ``max_streams``. A new device takes a free slot; when none is free, the
least recently active device gives up its slot only if it has been silent for ``idle_evict_s``
(>= ``gap_s``, so its state would have been reset on return anyway); otherwise the new device's
messages are refused (``refused_max_streams``) and the known devices keep their state.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from ..engine.state_table import StateFileError, StateTable
from ..runtime import load
from .payload import Decoder, PayloadError

MAX_DEVICE_ID = 128
RATE_CHECK_SAMPLES = 16           # samples over which a device's rate is compared with the bundle's
RATE_TOLERANCE = 0.005            # as edge replay: beyond 0.5 % the rates differ
RECENT_MESSAGES = 8               # message spans remembered per device to tell a duplicate from a late message


@dataclass
class Device:
    last_t: float = -np.inf       # newest timestamp accepted (fed or not): the order rule
    last_fed: float = np.nan      # newest fed timestamp: the gap rule
    last_wall: float = 0.0        # monotonic time of the last message: idle eviction
    outputs: int = 0              # fed samples so far: decimation phase
    first_t: float = np.nan       # the rate check: time of the first sample, samples seen (-1 once checked)
    seen: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_MESSAGES))   # (first t, last t) of messages


class Pipeline:
    def __init__(self, cfg, limits, idle_evict_s: float, counters, log=None, model=None):
        """cfg: config.Pipeline; counters: has inc(event, pipeline, by=1) (see service.Metrics);
        model: an already loaded one to reuse (a reload that keeps the bundle)."""
        self.cfg, self.idle_evict_s, self.counters = cfg, idle_evict_s, counters
        self.model = model or load(cfg.bundle, engine=cfg.engine)
        meta = self.model.meta
        self.channels = [c["name"] for c in meta["inputs"]]
        self.rate_hz = meta.get("sample_rate_hz")
        self.decode = Decoder(cfg.format, self.channels, limits.max_samples_per_message, limits.max_payload_bytes)
        self.fingerprint = repr([(s["name"], s["shape"]) for s in meta["state"]])   # as edge.runtime.Streams
        self.table = StateTable(self.model.init_state(1)[0], capacity=cfg.max_streams, fingerprint=self.fingerprint)
        self.devices: OrderedDict[str, Device] = OrderedDict()     # least recently active first
        self.pending: dict[str, list] = {}                          # device -> [(t [n], x [n, C]), ...]
        self.log = log

    # ------------------------------------------------------------------------ devices

    def _admit(self, device: str, now: float) -> Device | None:
        dev = self.devices.get(device)
        if dev is None:
            if len(self.devices) >= self.cfg.max_streams:
                oldest_id, oldest = next(iter(self.devices.items()))
                if now - oldest.last_wall < self.idle_evict_s or oldest_id in self.pending:
                    return None
                self._evict(oldest_id)
            dev = self.devices[device] = Device()
        self.devices.move_to_end(device)
        dev.last_wall = now
        return dev

    def _evict(self, device: str) -> None:
        del self.devices[device]
        self.pending.pop(device, None)
        if device in self.table:
            self.table.drop(device)
        self.counters.inc("evicted_idle", self.cfg.name)

    def evict_idle(self, now: float) -> None:
        while self.devices:
            device, dev = next(iter(self.devices.items()))
            if now - dev.last_wall < self.idle_evict_s or device in self.pending:
                return
            self._evict(device)

    # ------------------------------------------------------------------------ intake

    def accept(self, device: str, payload: bytes, now: float, redelivered: bool = False) -> int:
        """Decode one message of `device` and queue its new fed samples; returns how many.
        Raises PayloadError (the whole message is dropped) for a bad payload or a refused device."""
        if not device or len(device) > MAX_DEVICE_ID:
            raise PayloadError("bad_device_id", f"device id of {len(device)} characters (1..{MAX_DEVICE_ID})")
        t, x = self.decode(payload)
        dev = self._admit(device, now)
        if dev is None:
            raise PayloadError("refused_max_streams", f"{self.cfg.max_streams} streams active "
                               f"(pipeline[{self.cfg.name}].max_streams), none idle for {self.idle_evict_s:g} s")
        if self.rate_hz and dev.seen >= 0:
            self._check_rate(device, dev, t)
        span = (float(t[0]), float(t[-1]))
        if span[0] > dev.last_t and (len(t) == 1 or (t[1:] > t[:-1]).all()) and math.isfinite(x.sum()):
            # the common case, in three reductions: every sample new, in order and finite (a sum is NaN/Inf
            # if any value is, or if finite values overflow: then the careful path below decides)
            dev.recent.append(span)
            dev.last_t = span[1]
            self.pending.setdefault(device, []).append((t, x))
            return len(t)
        # the order rule against the newest earlier timestamp, the message's own samples included
        prev = np.maximum.accumulate(np.concatenate(([dev.last_t], t)))[:-1]
        new = t > prev
        if not new.all():
            reason = "redelivered" if redelivered else "duplicate" if span in dev.recent else "out_of_order"
            self.counters.inc(reason, self.cfg.name, by=int((~new).sum()))
        dev.recent.append(span)
        dev.last_t = max(dev.last_t, float(t[-1]), float(prev[-1]))
        fed = new & np.isfinite(x).all(axis=1)
        held = int(new.sum() - fed.sum())
        if held:
            self.counters.inc("not_fed_nonfinite", self.cfg.name, by=held)
        if fed.all():
            self.pending.setdefault(device, []).append((t, x))
        elif fed.any():
            self.pending.setdefault(device, []).append((t[fed], x[fed]))
        return int(fed.sum())

    def _check_rate(self, device: str, dev: Device, t) -> None:
        """Compare the device's rate over its first samples with the bundle's, once."""
        if np.isnan(dev.first_t):
            dev.first_t = float(t[0])
        dev.seen += len(t)
        if dev.seen < RATE_CHECK_SAMPLES or not t[-1] > dev.first_t:
            return
        rate = (dev.seen - 1) / (float(t[-1]) - dev.first_t)
        dev.seen = -1
        if abs(rate / self.rate_hz - 1.0) > RATE_TOLERANCE:
            self.counters.inc("rate_mismatch", self.cfg.name)
            if self.log:
                self.log.warning("device %s sends at %.6g Hz, %s steps at %.6g Hz: the daemon does not resample, so "
                                 "its outputs are computed as if at %.6g Hz; publish at the bundle's rate",
                                 device, rate, self.cfg.bundle, self.rate_hz, self.rate_hz)

    # ------------------------------------------------------------------------ engine

    def advance(self, engine_hist=None) -> dict:
        """Run every pending sample through the engine. Returns device -> (t [n], y [n, O]) of
        the outputs to publish (after decimation)."""
        runs = {d: (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
                for d, chunks in self.pending.items()}
        self.pending = {}
        outputs = {d: [] for d in runs}
        while runs:
            runs = self._round(runs, outputs, engine_hist)
        published = {}
        for device, parts in outputs.items():
            t = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            dev, n = self.devices[device], len(t)
            if self.cfg.every > 1:
                keep = (dev.outputs + np.arange(n)) % self.cfg.every == 0
                t, y = t[keep], y[keep]
            dev.outputs += n
            if len(t):
                published[device] = (t, y)
        return published

    def _round(self, runs: dict, outputs: dict, engine_hist) -> dict:
        """Advance each device by its next gap-free run; return what is left for later rounds."""
        ids, segs, resets, rest = [], [], [], {}
        gap = self.cfg.gap_s
        for device, (t, x) in runs.items():
            dev = self.devices[device]
            cut = np.flatnonzero(np.diff(t) > gap) + 1          # a gap inside the run: stop before it
            end = int(cut[0]) if len(cut) else len(t)
            resets.append(not np.isnan(dev.last_fed) and t[0] - dev.last_fed > gap)
            ids.append(device)
            segs.append((t[:end], x[:end]))
            dev.last_fed = float(t[end - 1])
            if end < len(t):
                rest[device] = (t[end:], x[end:])
        slots = self.table.slots(ids, now=[s[0][-1] for s in segs])
        for device, reset in zip(ids, resets):
            if reset:
                self.table.reset(device)
                self.counters.inc("gap_resets", self.cfg.name)
        lengths = np.array([len(s[0]) for s in segs])
        order = np.argsort(lengths, kind="stable")
        done = 0
        for k in range(len(order)):                     # blocks of increasing length: devices leave as they finish
            active = order[k:]
            T = int(lengths[order[k]]) - done
            if T == 0:
                continue
            x = np.stack([segs[i][1][done:done + T] for i in active], axis=1)       # [T, devices, C]
            state = self.table.gather(slots[active])
            t0 = time.perf_counter()
            y = self.model.block(x, state)                                            # [T, devices, O]
            if engine_hist is not None:
                engine_hist(time.perf_counter() - t0)
            self.table.scatter(slots[active], state)
            for j, i in enumerate(active):
                outputs[ids[i]].append((segs[i][0][done:done + T], y[:, j].copy()))
            done += T
        return rest

    # ------------------------------------------------------------------------ persistence

    def save(self, path) -> None:
        self.table.save(path)

    def restore(self, path, now: float) -> int:
        """Load a checkpoint if there is one; a bad or foreign one is set aside (*.bad) and logged."""
        try:
            self.table.restore(path)
        except FileNotFoundError:
            return 0
        except StateFileError as e:
            bad = f"{path}.bad"
            path.replace(bad)
            if self.log:
                self.log.error("%s; set aside as %s, devices start fresh", e, bad)
            return 0
        for device in self.table.ids():
            t = self.table.last_seen(device)
            t = np.nan if t is None else t
            self.devices[device] = Device(last_t=-np.inf if np.isnan(t) else t, last_fed=t, last_wall=now)
        return len(self.devices)
