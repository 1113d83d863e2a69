"""Classical (and one learned) attitude filters from PyPI, behind one signature, for comparison.

Every adapter is ``estimate(acc, gyr, rate_hz) -> quat``:

* ``acc``: N×3 accelerometer in m/s², IMU frame
* ``gyr``: N×3 gyroscope in rad/s, IMU frame
* ``rate_hz``: sampling rate
* returns N×4 float64 unit quaternions (w, x, y, z), sensor-to-earth with the earth z axis up
  (ENU for the filters that let us choose; with a 6-D IMU the heading is arbitrary, so only the
  inclination is meaningful).

Each peer is imported lazily inside its adapter; a missing package raises :class:`PeerNotInstalled`
("not installed: pip install …"). The packages are in the ``test`` extra of pyproject.toml.

Unit and frame traps handled here (see shared/notes/imu-attitude.md §4):

* ``vqf`` wants C-contiguous float64 arrays (float32 or a strided view raises "ndarray is not
  C-contiguous" / a type error).
* ``imufusion`` wants deg/s and g, defaults to a 100 Hz sample rate and the NWU convention; we set
  the rate and ENU explicitly. It has no batch call, so it runs one Python call per sample.
* ``ahrs.filters.EKF(frame='ENU')`` (AHRS 0.4.0) comes out flipped 180° about x against an ENU
  reference; its default ``frame='NED'`` scores correctly, so we use that.
* RIANN (``riann`` package, a 2×200 GRU in ONNX) was most likely trained on most of BROAD: treat
  its BROAD scores as in-sample.

Nothing here imports torch.
"""
from __future__ import annotations

import functools
import importlib
import importlib.resources
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.io.recordings import STANDARD_GRAVITY


Estimator = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


class PeerNotInstalled(ImportError):
    """A peer's package is missing; the message says what to pip install."""


def _require(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerNotInstalled(f"not installed: pip install {pip_name}  ({exc})") from exc


def _f64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def _check(acc, gyr) -> tuple[np.ndarray, np.ndarray]:
    acc, gyr = _f64(acc), _f64(gyr)
    if acc.ndim != 2 or acc.shape[1] != 3 or gyr.shape != acc.shape:
        raise ValueError(f"acc and gyr must both be N×3, got {acc.shape} and {gyr.shape}")
    return acc, gyr


def _unit(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# adapters


def vqf_estimate(acc, gyr, rate_hz):
    """``vqf.VQF`` (causal, C++), default parameters, 6-D output."""
    vqf = _require("vqf", "vqf")
    acc, gyr = _check(acc, gyr)
    return _unit(vqf.VQF(1.0 / rate_hz).updateBatch(gyr, acc)["quat6D"])


def basic_vqf_estimate(acc, gyr, rate_hz):
    """``vqf.BasicVQF`` (causal, no bias estimation / rest detection), default parameters."""
    vqf = _require("vqf", "vqf")
    acc, gyr = _check(acc, gyr)
    return _unit(vqf.BasicVQF(1.0 / rate_hz).updateBatch(gyr, acc)["quat6D"])


MADGWICK_GAIN = 0.033  # ahrs' own IMU default, the gain the notes measured with


def madgwick_estimate(acc, gyr, rate_hz, gain: float = MADGWICK_GAIN):
    """``ahrs.filters.Madgwick`` (pure Python, one loop step per sample), gain 0.033."""
    filters = _require("ahrs.filters", "ahrs")
    acc, gyr = _check(acc, gyr)
    return _unit(filters.Madgwick(gyr=gyr, acc=acc, frequency=float(rate_hz), gain=gain).Q)


def ekf_estimate(acc, gyr, rate_hz):
    """``ahrs.filters.EKF`` (pure Python), default noises, default ``frame='NED'`` (see module doc)."""
    filters = _require("ahrs.filters", "ahrs")
    acc, gyr = _check(acc, gyr)
    return _unit(filters.EKF(gyr=gyr, acc=acc, frequency=float(rate_hz), frame="NED").Q)


IMUFUSION_SETTINGS = dict(gain=0.5, gyroscope_range=2000, acceleration_rejection=10,
                          magnetic_rejection=10, rejection_timeout=5)  # the x-io README's example


def imufusion_estimate(acc, gyr, rate_hz):
    """``imufusion.Ahrs`` (x-io Fusion, C), README settings; deg/s and g in, one call per sample."""
    imufusion = _require("imufusion", "imufusion")
    acc, gyr = _check(acc, gyr)
    ahrs = imufusion.Ahrs()
    ahrs.set_settings(imufusion.AhrsSettings(sample_rate=float(rate_hz),
                                             convention=imufusion.CONVENTION_ENU,
                                             **IMUFUSION_SETTINGS))
    gyr_deg = np.degrees(gyr)
    acc_g = acc / STANDARD_GRAVITY  # imufusion wants g
    out = np.empty((len(acc), 4))
    update, get = ahrs.update_no_magnetometer, ahrs.get_quaternion
    for i in range(len(acc)):
        update(gyr_deg[i], acc_g[i])
        out[i] = get()
    return _unit(out)


@functools.lru_cache(maxsize=None)
def _riann_model(threads: int):
    riann = _require("riann.riann", "riann")
    ort = _require("onnxruntime", "onnxruntime")
    path = str(importlib.resources.files("riann") / "riann.onnx")
    model = riann.RIANN(path)
    # Rebuild the session with a fixed thread count, so its timing means the same on a shared box.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    model.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return model


RIANN_THREADS = 1


def riann_estimate(acc, gyr, rate_hz):
    """RIANN (``riann`` package: 2×200 GRU, ONNX), whole sequence in one causal call, 1 thread.

    Probably trained on most of BROAD, so its BROAD scores are in-sample.
    """
    acc, gyr = _check(acc, gyr)
    return _unit(_riann_model(RIANN_THREADS).predict(acc, gyr, float(rate_hz)))


# ----------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Peer:
    name: str
    estimate: Estimator
    module: str        # what must import
    pip: str           # what to pip install
    per_sample: bool   # a Python call per sample (its µs include interpreter overhead)
    note: str = ""


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("VQF", vqf_estimate, "vqf", "vqf", False, "vqf.VQF, causal, defaults"),
    Peer("BasicVQF", basic_vqf_estimate, "vqf", "vqf", False, "vqf.BasicVQF, defaults"),
    Peer("Madgwick", madgwick_estimate, "ahrs", "ahrs", True, f"ahrs, gain {MADGWICK_GAIN}"),
    Peer("EKF", ekf_estimate, "ahrs", "ahrs", True, "ahrs, default noises, frame NED"),
    Peer("imufusion", imufusion_estimate, "imufusion", "imufusion", True,
         "x-io Fusion, gain 0.5, rejection 10°, timeout 5 s"),
    Peer("RIANN", riann_estimate, "riann.riann", "riann", False,
         "GRU (ONNX, 1 thread); likely trained on BROAD, in-sample"),
]}


def available(name: str) -> bool:
    """Whether a peer's package imports."""
    try:
        _require(PEERS[name].module, PEERS[name].pip)
        return True
    except PeerNotInstalled:
        return False


def missing_message(name: str) -> str | None:
    """None when the peer imports, else "not installed: pip install …"."""
    if available(name):
        return None
    return f"{name}: not installed: pip install {PEERS[name].pip}"


def estimators(names=None, skip_missing: bool = True) -> dict[str, Estimator]:
    """``{name: estimate}`` for the named peers (default: all); missing ones dropped or raised."""
    out = {}
    for name in names or PEERS:
        if name not in PEERS:
            raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        if not available(name):
            if skip_missing:
                continue
            raise PeerNotInstalled(missing_message(name))
        out[name] = PEERS[name].estimate
    return out


def versions() -> dict[str, str]:
    """Installed version of each peer package (``None`` when missing)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pip in dict.fromkeys(p.pip for p in PEERS.values()):
        try:
            out[pip] = version(pip)
        except PackageNotFoundError:
            out[pip] = None
    return out


def timed(estimate: Estimator, acc, gyr, rate_hz) -> tuple[np.ndarray, float]:
    """Run one estimator; return (quat, µs per sample), wall clock around the whole call."""
    t0 = time.perf_counter()
    q = estimate(acc, gyr, rate_hz)
    return q, 1e6 * (time.perf_counter() - t0) / max(len(acc), 1)
