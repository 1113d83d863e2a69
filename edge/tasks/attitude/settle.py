"""Recovery after a state reset (issue 18): the attitude filter levels itself from one accelerometer
sample when it starts, which in motion can be tens of degrees off, and its 2.5 s gravity filter then needs
about 5 s to get under 3°. After a reset the runtime (replay, the daemon) lets this module feed the
first `SETTLE_S` seconds instead: sample by sample, with the filter's gravity memory replaced after
each step by the running mean of the earth-frame acceleration since the reset (gain 1/k, as a
filter's start-up does), then the normal filter takes over from that mean. docs/bad-values.md has
the numbers on the BROAD test trials.

The count of settled samples rides in the state word ``filter.started`` (the kernel treats < 0.5 as
"level from the accelerometer" and writes 1 after every step): ``RESTART`` marks a reset stream, and
``k + 2`` a stream that has settled k samples; so settling survives checkpoints and message
boundaries. A stream's first start (``started = 0``) is left to the kernel as before.
"""
from __future__ import annotations

import numpy as np

SETTLE_S = 1.0
RESTART = -1.0                   # < 0.5: the kernel levels from the accelerometer; we then settle


def _layout(meta: dict):
    """(started index, [x1, x2, y1, y2] slices) in the flat state row, or None for another program."""
    op = next((o for o in meta.get("program", {}).get("ops", ()) if o.get("op") == "attitude_filter"), None)
    if op is None:
        return None
    where, at = {}, 0
    for s in meta["state"]:
        n = int(np.prod(s["shape"]))
        where[s["name"]] = slice(at, at + n)
        at += n
    try:
        return where[op["state_started"]].start, [where[op[k]] for k in ("state_x1", "state_x2", "state_y1", "state_y2")]
    except KeyError:
        return None


def _usable(model) -> bool:
    # the int8 reference keeps integer bits in its state words: nothing to edit there
    return not getattr(model.executor, "state_holds_bits", False) and _layout(model.meta) is not None


def restart(model, row: np.ndarray) -> None:
    """Mark a stream whose state was just reset (``row``: its state, the initial one) for settling."""
    if _usable(model):
        row[_layout(model.meta)[0]] = RESTART


def settling(model, row: np.ndarray) -> int:
    """How many of the stream's next samples `settle` should feed (0: none)."""
    if not _usable(model):
        return 0
    s = float(row[_layout(model.meta)[0]])
    k = 0 if s == RESTART else int(round(s)) - 2 if s >= 2.5 else None
    rate = float(model.meta.get("sample_rate_hz") or 0)
    return 0 if k is None or not rate else max(0, int(SETTLE_S * rate) - k)


def settle(model, x: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Feed ``x [n, C]`` (n ≤ `settling`) to one stream (``state [1, S]``, advanced); returns y [n, O]."""
    started, memory = _layout(model.meta)
    row = state[0]
    s = float(row[started])
    done = 0 if s == RESTART else int(round(s)) - 2
    total = int(SETTLE_S * float(model.meta["sample_rate_hz"]))
    y = np.empty((len(x), model.output_size), np.float32)
    x1, y1 = memory[0], memory[2]
    for j in range(len(x)):
        y[j] = model.step(x[j:j + 1], state)[0]
        k = done + j + 1
        mean = row[y1] + (row[x1] - row[y1]) / np.float32(k)      # x1: this sample's earth-frame acc
        for part in memory:
            row[part] = mean
        row[started] = 1.0 if k >= total else k + 2
    return y
