"""The recording's channels a bundle reads, in the bundle's order and units."""
from __future__ import annotations

import math

import numpy as np

from edge.io.recordings import STANDARD_GRAVITY
from edge.runtime import InputError

# unit spellings -> canonical, and conversion factors (canonical in the recording -> the bundle's)
_UNIT_ALIASES = {"m/s^2": "m/s^2", "m/s2": "m/s^2", "m/s²": "m/s^2", "m s^-2": "m/s^2", "g": "g",
                 "rad/s": "rad/s", "rad s^-1": "rad/s", "deg/s": "deg/s", "dps": "deg/s", "°/s": "deg/s"}
_UNIT_FACTORS = {("m/s^2", "g"): 1.0 / STANDARD_GRAVITY, ("g", "m/s^2"): STANDARD_GRAVITY,
                 ("rad/s", "deg/s"): 180.0 / math.pi, ("deg/s", "rad/s"): math.pi / 180.0}


def select_inputs(rec, meta: dict, label: str):
    """The recording's channels that the bundle reads, as float32 ``[N, C]`` in the bundle's order
    and units. Raises InputError listing every missing channel."""
    wanted = [str(c.get("name", "")) for c in meta["inputs"]]
    have = {c.lower(): i for i, c in enumerate(rec.channels)}
    missing = [w for w in wanted if w.lower() not in have]
    if missing:
        raise InputError(f"{rec.source or 'recording'}: the bundle {label} reads channel(s) "
                         f"{', '.join(missing)}, which the recording lacks (it has: {', '.join(rec.channels)})")
    cols = [have[w.lower()] for w in wanted]
    x = rec.x[:, cols].astype(np.float32, copy=True)
    for k, (spec, c) in enumerate(zip(meta["inputs"], cols)):
        want = _UNIT_ALIASES.get(str(spec.get("unit") or "").strip().lower())
        got = _UNIT_ALIASES.get(str(rec.units[c] or "").strip().lower())
        if want is None or got is None or want == got:
            continue
        factor = _UNIT_FACTORS.get((got, want))
        if factor is None:
            raise InputError(f"{rec.source or 'recording'}: channel {wanted[k]} is in {rec.units[c]}, "
                             f"the bundle {label} wants {spec.get('unit')}")
        x[:, k] *= np.float32(factor)
    return np.ascontiguousarray(x)
