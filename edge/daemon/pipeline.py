"""One subscription's engine side, without MQTT: payloads in, per-device outputs out.

    messages --decode--> samples --order/gap rule--> pending runs --engine rounds--> outputs

Rules applied to each device's samples (the same as `edge.io.recordings` / `edge replay`):

* A timestamp not later than the device's last one is dropped: as ``duplicate`` when its message
  repeats one of the device's last 8 messages (same first and last timestamp), as ``redelivered``
  when the broker marked it as a re-send, else as ``out_of_order``.
* A message may number its samples (``seq``, see `edge.daemon.payload`): numbers skipped when a later
  one arrives are counted as ``samples_missing`` (the device's first gap is logged); a message that
  arrives into such a skipped range is late (``out_of_order``), not a ``duplicate``.
* A sample with NaN/Inf in any channel, or a value outside the channel's valid range
  (`edge.validate.InputContract`: the bundle's ``inputs[].range``, or the default by unit), is **not
  fed** (no output); the state is held across it. Counted as ``not_fed_nonfinite`` / ``out_of_range``;
  a device's first out-of-range sample is logged once.
* The state guard of `edge.runtime.Model`: a device whose state turns non-finite in an engine call is
  reset to the initial state (before it is stored, so it is never checkpointed), counted as
  ``state_reset_nonfinite`` and logged with the device and the sample's time.
* A gap — no fed sample for longer than ``gap_s`` — resets the state to the bundle's initial state
  at the first fed sample after it.
* Every fed sample yields exactly one output, in order.
* Resampling, as `edge replay`: a device whose rate (measured over its first `RATE_CHECK_SAMPLES`
  samples, which are held back until then) differs from the bundle's ``sample_rate_hz`` by more than
  0.5 % is counted (``rate_mismatch``), and its samples are resampled onto the bundle's grid
  (`edge.io.resample`); the engine steps the grid samples (the order, NaN and gap rules apply to
  them), and each fed input sample yields the output of the latest fed grid sample at or before it,
  its orientation carried over the remaining lag with its own gyro (the task's `carry`, `edge.tasks.attitude.view.carry`).
  A fed sample with no fed grid sample before it (a device that starts non-finite) has no output,
  as `edge replay` leaves it NaN. The grid survives a restart: it is saved beside the checkpoint.

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

import json
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.engine.state_table import StateFileError, StateTable
from edge import tasks
from edge.replay import RATE_TOLERANCE    # beyond 0.5 % the rates differ
from edge.runtime import load
from edge.io.atomic import atomic_open
from edge.io.resample import StreamResampler
from edge.daemon.payload import Decoder, PayloadError

MAX_DEVICE_ID = 128
RATE_CHECK_SAMPLES = 16           # samples over which a device's rate is compared with the bundle's
RECENT_MESSAGES = 8               # message spans remembered per device to tell a duplicate from a late message


@dataclass
class Device:
    last_t: float = -np.inf       # newest timestamp accepted (fed or not): the order rule
    last_fed: float = np.nan      # newest fed timestamp: the gap rule
    last_wall: float = 0.0        # monotonic time of the last message: idle eviction
    outputs: int = 0              # fed samples so far: decimation phase
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_MESSAGES))   # (first t, last t) of messages
    feed: str = ""                # "direct" or "resample"; "" while the rate is unknown
    early: list = field(default_factory=list)       # [(t [n], x [n, C])] held back until the rate is known
    resampler: StreamResampler | None = None
    last_k: int = -1              # resampled: the latest fed grid index and its output [O] (None before one)
    last_y: np.ndarray | None = None
    next_seq: int = -1            # the number (seq) the device's next sample should carry; -1 = not known yet
    holes: deque = field(default_factory=lambda: deque(maxlen=RECENT_MESSAGES))   # recent skipped seq ranges
    warned_missing: bool = False  # its first gap is logged, later ones only counted
    range_reported: bool = False  # its first out-of-range sample has been logged


class Pipeline:
    def __init__(self, cfg, limits, idle_evict_s: float, counters, log=None, model=None):
        """cfg: config.Pipeline; counters: has inc(event, pipeline, by=1) (see service.Metrics);
        model: an already loaded one to reuse (a reload that keeps the bundle)."""
        self.cfg, self.idle_evict_s, self.counters = cfg, idle_evict_s, counters
        self.model = model or load(cfg.bundle, engine=cfg.engine)
        meta = self.model.meta
        self.view = tasks.view(meta)        # the task's hooks (a causal carry of outputs off the model grid)
        self.channels = [c["name"] for c in meta["inputs"]]
        self.rate_hz = meta.get("sample_rate_hz")
        self.contract = self.model.contract        # the valid range of each channel
        self.decode = Decoder(cfg.format, self.channels, limits.max_samples_per_message, limits.max_payload_bytes)
        self.fingerprint = repr([(s["name"], s["shape"]) for s in meta["state"]])   # as edge.runtime.Streams
        self.table = StateTable(self.model.init_state(1)[0], capacity=cfg.max_streams, fingerprint=self.fingerprint)
        self.devices: OrderedDict[str, Device] = OrderedDict()     # least recently active first
        self.pending: dict[str, list] = {}                          # device -> [(t [n], x [n, C]), ...]
        self.grid_k: dict[str, list] = {}       # resampled device -> grid indices of its pending samples [[n], ...]
        self.waiting: dict[str, list] = {}      # resampled device -> input samples awaiting outputs
        self.log = log

    # ------------------------------------------------------------------------ devices

    def _admit(self, device: str, now: float) -> Device | None:
        dev = self.devices.get(device)
        if dev is None:
            if len(self.devices) >= self.cfg.max_streams:
                oldest_id, oldest = next(iter(self.devices.items()))
                if now - oldest.last_wall < self.idle_evict_s or oldest_id in self.pending or oldest_id in self.waiting:
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
            if now - dev.last_wall < self.idle_evict_s or device in self.pending or device in self.waiting:
                return
            self._evict(device)

    # ------------------------------------------------------------------------ intake

    def accept(self, device: str, payload: bytes, now: float, redelivered: bool = False) -> int:
        """Decode one message of `device` and queue its new fed samples; returns how many.
        Raises PayloadError (the whole message is dropped) for a bad payload or a refused device."""
        if not device or len(device) > MAX_DEVICE_ID:
            raise PayloadError("bad_device_id", f"device id of {len(device)} characters (1..{MAX_DEVICE_ID})")
        t, x, seq = self.decode(payload)
        dev = self._admit(device, now)
        if dev is None:
            raise PayloadError("refused_max_streams", f"{self.cfg.max_streams} streams active "
                               f"(pipeline[{self.cfg.name}].max_streams), none idle for {self.idle_evict_s:g} s")
        late = seq is not None and self._sequence(device, dev, seq, len(t))
        span = (float(t[0]), float(t[-1]))
        if span[0] > dev.last_t and (len(t) == 1 or (t[1:] > t[:-1]).all()) and self.contract.all_fed(x):
            # the common case, in a few reductions: every sample new, in order, finite and in range
            dev.recent.append(span)
            dev.last_t = span[1]
            self._queue(device, dev, t, x, finite=True)
            return len(t)
        # the order rule against the newest earlier timestamp, the message's own samples included
        prev = np.maximum.accumulate(np.concatenate(([dev.last_t], t)))[:-1]
        new = t > prev
        if not new.all():
            # a message that fills a hole in the numbers is late, not a repeat
            reason = "redelivered" if redelivered else "duplicate" if span in dev.recent and not late \
                else "out_of_order"
            self.counters.inc(reason, self.cfg.name, by=int((~new).sum()))
        dev.recent.append(span)
        dev.last_t = max(dev.last_t, float(t[-1]), float(prev[-1]))
        t_new = t[new]
        screened = self.contract.screen(x[new], lambda idx: f"t={t_new[idx[0]]:.6f}")
        fed = new.copy()
        fed[new] = screened.fed
        if screened.counts["not_finite"]:
            self.counters.inc("not_fed_nonfinite", self.cfg.name, by=screened.counts["not_finite"])
        if screened.counts["out_of_range"]:
            self.counters.inc("out_of_range", self.cfg.name, by=screened.counts["out_of_range"])
            x = np.where((fed | ~new)[:, None], x, np.float32(np.nan))    # from here on like a non-finite sample
            if self.log and not dev.range_reported:
                dev.range_reported = True
                self.log.warning("device %s: %s; not fed, state held (out_of_range, %d in this message; reported "
                                 "once per device)", device, screened.first["out_of_range"],
                                 screened.counts["out_of_range"])
        if new.any():
            self._queue(device, dev, t[new], x[new])
        return int(fed.sum())

    def _sequence(self, device: str, dev: Device, seq: int, n: int) -> bool:
        """Follow the device's numbering: numbers skipped when a later one arrives are counted as missing
        (``samples_missing``; the device's first gap is logged). Returns True when the message falls in such
        a hole, i.e. arrives late rather than again (the order rule drops it either way)."""
        late = any(a <= seq and seq + n <= b for a, b in dev.holes)
        if dev.next_seq >= 0 and seq > dev.next_seq:
            missing = seq - dev.next_seq
            dev.holes.append((dev.next_seq, seq))
            self.counters.inc("samples_missing", self.cfg.name, by=missing)
            if not dev.warned_missing:
                dev.warned_missing = True
                self.counters.inc("device_missing", self.cfg.name)
                if self.log:
                    self.log.warning("device %s: %d samples missing (seq %d..%d never arrived); further gaps are "
                                     "counted in edge_samples_missing_total", device, missing, dev.next_seq, seq - 1)
        dev.next_seq = max(dev.next_seq, seq + n)
        return late

    def _queue(self, device: str, dev: Device, t, x, finite: bool = False) -> None:
        """Route a device's new in-order samples (non-finite ones included: they blank grid points).
        ``finite``: the caller has checked that every value is finite (the intake's fast path)."""
        if dev.feed == "" and not self.rate_hz:
            dev.feed = "direct"
        if dev.feed == "":
            dev.early.append((t, x))
            t_all = np.concatenate([c[0] for c in dev.early])
            if len(t_all) < RATE_CHECK_SAMPLES or not t_all[-1] > t_all[0]:
                return
            self._decide(device, dev, (len(t_all) - 1) / (t_all[-1] - t_all[0]))
            t, x = t_all, np.concatenate([c[1] for c in dev.early])
            dev.early, finite = [], False          # earlier messages may hold non-finite samples
        if dev.feed == "direct":
            if finite:
                self.pending.setdefault(device, []).append((t, x))
                return
            fed = np.isfinite(x).all(axis=1)
            if fed.any():
                self.pending.setdefault(device, []).append((t[fed], x[fed]) if not fed.all() else (t, x))
            return
        k, tg, xg, j, lag, fed_j = dev.resampler.push(t, x)
        fed_g = np.isfinite(xg).all(axis=1)
        if fed_g.any():
            self.pending.setdefault(device, []).append((tg[fed_g], xg[fed_g]))
            self.grid_k.setdefault(device, []).append(k[fed_g])
        fed = np.isfinite(x).all(axis=1)
        if fed.any():
            self.waiting.setdefault(device, []).append((t[fed], x[fed], j[fed], lag[fed], fed_j[fed]))

    def _decide(self, device: str, dev: Device, rate: float) -> None:
        """Feed directly, or resample onto the bundle's grid (the rule of edge replay)."""
        if abs(rate / self.rate_hz - 1.0) <= RATE_TOLERANCE:
            dev.feed = "direct"
            return
        dev.feed, dev.resampler = "resample", StreamResampler(self.rate_hz, self.cfg.gap_s)
        self.counters.inc("rate_mismatch", self.cfg.name)
        if self.log:
            self.log.warning("device %s sends at %.6g Hz, %s steps at %.6g Hz: its samples are resampled to %.6g Hz",
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
        for device in set(self.waiting) | set(self.grid_k):
            outputs[device] = self._per_input(device, outputs.get(device, []))
        self.waiting, self.grid_k = {}, {}
        published = {}
        for device, parts in outputs.items():
            if not parts:
                continue
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

    def _per_input(self, device: str, parts: list) -> list:
        """A resampled device's outputs, one per fed input sample: that of the latest fed grid sample at
        or before it (from this advance or kept from an earlier one), its orientation carried over the lag."""
        dev = self.devices[device]
        if parts:
            ks = np.concatenate(self.grid_k[device])
            ys = np.concatenate([p[1] for p in parts])                           # [grid samples, O]
        else:
            ks, ys = np.empty(0, np.int64), np.empty((0, self.model.output_size), np.float32)
        if dev.last_y is not None:
            ks, ys = np.concatenate(([dev.last_k], ks)), np.concatenate((dev.last_y[None], ys))
        if len(ks):
            dev.last_k, dev.last_y = int(ks[-1]), ys[-1].copy()
        if device not in self.waiting:
            return []
        t, x, j, lag, fed_j = (np.concatenate(c) for c in zip(*self.waiting[device]))
        src = np.searchsorted(ks, j, side="right") - 1
        ok = src >= 0                   # none before the device's first fed grid sample
        y = ys[src[ok]]
        if hasattr(self.view, "carry"):
            self.view.carry(y, self.model.meta, x[ok], lag[ok], fed_j[ok])
        return [(t[ok], y)] if ok.any() else []

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
                if hasattr(self.view, "restart"):   # the task feeds the first samples after a reset its way
                    self.view.restart(self.model, self.table.rows[self.table.slot_of(device)])
        if hasattr(self.view, "settling"):
            for i, device in enumerate(ids):
                n = min(self.view.settling(self.model, self.table.rows[slots[i]]), len(segs[i][0]))
                if n:
                    state = self.table.gather(slots[i:i + 1])
                    outputs[device].append((segs[i][0][:n], self.view.settle(self.model, segs[i][1][:n], state)))
                    self.table.scatter(slots[i:i + 1], state)
                    segs[i] = (segs[i][0][n:], segs[i][1][n:])
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
            guard = []
            y = self.model.block(x, state, guard)                                     # [T, devices, O]
            if engine_hist is not None:
                engine_hist(time.perf_counter() - t0)
            for r in guard:                 # the guard reset them before they are stored: never checkpointed
                i = active[r.stream]
                self.counters.inc("state_reset_nonfinite", self.cfg.name)
                if self.log:
                    self.log.error("device %s: %s", ids[i], r.describe(ids[i], f"t={segs[i][0][done + r.sample]:.6f}"))
            self.table.scatter(slots[active], state)
            for j, i in enumerate(active):
                outputs[ids[i]].append((segs[i][0][done:done + T], y[:, j].copy()))
            done += T
        return rest

    # ------------------------------------------------------------------------ persistence

    def save(self, path) -> None:
        """The state table, and beside it each device's feed and resampling grid. The grid file is written
        first: a crash between the two leaves it newer than the table, which `restore` detects."""
        grids = {device: {"feed": dev.feed, "early": [[t.tolist(), x.tolist()] for t, x in dev.early],
                          "resampler": dev.resampler.to_dict() if dev.resampler else None,
                          "last_k": dev.last_k, "last_y": None if dev.last_y is None else dev.last_y.tolist(),
                          "table_t": self._table_t(device), "next_seq": dev.next_seq}
                 for device, dev in self.devices.items()}
        side = grid_path(path)
        with atomic_open(side, "w") as f:
            json.dump(grids, f)
        self.table.save(path)

    def _table_t(self, device: str) -> float | None:
        t = self.table.last_seen(device) if device in self.table else None
        return None if t is None or math.isnan(t) else float(t)

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
        self._restore_grids(grid_path(path), now)
        return len(self.devices)

    def _restore_grids(self, path, now: float) -> None:
        """Each device's feed and grid. A device without one (no or a bad grid file) measures its rate
        again; one whose grid is newer than its state (a crash between the two writes) starts fresh."""
        try:
            grids = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            if self.log:
                self.log.error("%s: %s; devices measure their rate again", path, e)
            return
        for device, g in grids.items():
            if g["table_t"] != self._table_t(device):
                if device in self.table:
                    self.table.drop(device)
                self.devices.pop(device, None)
                if self.log:
                    self.log.error("%s: device %s's grid is newer than its state; it starts fresh", path, device)
                continue
            dev = self.devices.setdefault(device, Device(last_wall=now))
            dev.feed, dev.last_k, dev.next_seq = g["feed"], g["last_k"], g.get("next_seq", -1)
            dev.early = [(np.array(t, np.float64), np.array(x, np.float32).reshape(len(t), -1)) for t, x in g["early"]]
            dev.last_y = None if g["last_y"] is None else np.array(g["last_y"], np.float32)
            if g["resampler"]:
                dev.resampler = StreamResampler.from_dict(g["resampler"])
                dev.last_t = dev.resampler.prev_t       # the order rule follows the inputs, not the grid
            elif dev.early:
                dev.last_t = float(dev.early[-1][0][-1])


def grid_path(state_path) -> Path:
    """The resampling grids' file beside a pipeline's state file."""
    return Path(f"{state_path}.grid.json")
