"""Activity-recognition data that ships inside PyPI wheels, read offline with numpy only.

* **watch** — `seglearn` 1.2.5 `seglearn/data/watch_dataset.npy` (BSD-3, © 2018 David M. Burns; Burns et
  al. 2018, arXiv:1802.01489): 140 recordings of 7 shoulder-physiotherapy exercises by 10 subjects
  (14 each, 20 per exercise), a smartwatch's 6-axis IMU at 50 Hz, 947–2618 samples each. The file stores
  acceleration in g; it is converted here to m/s² so that a recording reads like any other IMU file.
* **BasicMotions** — `aeon` 1.6.0 `aeon/datasets/data/BasicMotions/BasicMotions_{TRAIN,TEST}.ts` (UEA
  archive; no licence, a citation request): 4 activities by 4 students, 40 + 40 recordings of
  6 × 100 samples at 10 Hz (accelerometer then gyroscope, units not documented), its own train/test split.

The files are found with `importlib.util.find_spec`, which does not import seglearn or aeon (and so
not scikit-learn or numba): installing the wheels with `--no-deps` is enough.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.io.recordings import STANDARD_GRAVITY

WATCH_RATE_HZ = 50.0
WATCH_CLASSES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")  # the file's y_labels, in label order
WATCH_CLASS_NAMES = {"PEN": "pendulum", "ABD": "abduction", "FEL": "forward elevation",
                     "IR": "internal rotation", "ER": "external rotation", "TRAP": "trapezius extension",
                     "ROW": "upright row"}
IMU_CHANNELS = [{"name": "acc_x", "unit": "m/s^2"}, {"name": "acc_y", "unit": "m/s^2"},
                {"name": "acc_z", "unit": "m/s^2"}, {"name": "gyr_x", "unit": "rad/s"},
                {"name": "gyr_y", "unit": "rad/s"}, {"name": "gyr_z", "unit": "rad/s"}]
BASIC_MOTIONS_RATE_HZ = 10.0


class DatasetError(ValueError):
    """A dataset file that is missing or not what its documentation says; the message names it."""


@dataclass
class Recordings:
    """Labelled variable-length recordings: x[i] is (T_i, channels) float32, y[i] its class index."""
    name: str
    x: list[np.ndarray]
    y: np.ndarray              # (n,) int64
    classes: tuple[str, ...]
    rate_hz: float
    channels: list[dict]       # [{"name", "unit"}]
    subject: np.ndarray | None = None   # (n,) int64 where the dataset names subjects

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index) -> "Recordings":
        index = np.asarray(index, dtype=np.int64)
        return Recordings(self.name, [self.x[i] for i in index], self.y[index], self.classes, self.rate_hz,
                          self.channels, None if self.subject is None else self.subject[index])


def wheel_file(package: str, relative: str, version: str) -> Path:
    """A data file inside an installed wheel, located without importing the package."""
    spec = importlib.util.find_spec(package)
    hint = f"pip install --no-deps {package}=={version}"
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"{package} is not installed ({hint}): its wheel carries {relative}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DatasetError(f"{path}: not found; the {package} {version} wheel carries it ({hint})")
    return path


def load_watch(path=None) -> Recordings:
    """seglearn's watch data: 140 recordings (T, 6) in m/s² and rad/s, 7 exercises, subjects 1–10."""
    path = Path(path) if path is not None else wheel_file("seglearn", "data/watch_dataset.npy", "1.2.5")
    try:
        # a pickled dict: only ever read from the pinned wheel (or a file the caller vouches for)
        d = np.load(path, allow_pickle=True).item()
    except Exception as e:  # numpy and pickle raise many types for a file that is not this one
        raise DatasetError(f"{path}: not the seglearn watch dataset ({type(e).__name__}: {e})") from None
    missing = [k for k in ("X", "y", "subject", "y_labels") if not isinstance(d, dict) or k not in d]
    if missing:
        raise DatasetError(f"{path}: lacks {', '.join(missing)}")
    if tuple(d["y_labels"]) != WATCH_CLASSES:
        raise DatasetError(f"{path}: classes {list(d['y_labels'])}, expected {list(WATCH_CLASSES)}")
    scale = np.array([STANDARD_GRAVITY] * 3 + [1.0] * 3)  # g -> m/s²; the gyroscope is in rad/s already
    x = []
    for i, a in enumerate(d["X"]):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 6 or not np.isfinite(a).all():
            raise DatasetError(f"{path}: recording {i} has shape {a.shape} or non-finite values, expected (T, 6)")
        x.append((a * scale).astype(np.float32))
    y = np.asarray(d["y"], dtype=np.int64)
    subject = np.asarray(d["subject"], dtype=np.int64)
    if not (len(x) == len(y) == len(subject)):
        raise DatasetError(f"{path}: {len(x)} recordings, {len(y)} labels, {len(subject)} subjects")
    return Recordings("watch", x, y, WATCH_CLASSES, WATCH_RATE_HZ, IMU_CHANNELS, subject)


def read_ts(path) -> tuple[list[np.ndarray], list[str], tuple[str, ...]]:
    """A sktime/aeon `.ts` file of equal- or variable-length multivariate series:
    -> (series (T, dims) float32, label per series, the @classLabel names)."""
    path = Path(path)
    series, labels, classes, dims, in_data = [], [], None, None, False
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, value = line.partition(" ")
                key = key.lower()
                if key == "@classlabel":
                    parts = value.split()
                    if not parts or parts[0].lower() != "true":
                        raise DatasetError(f"{path}:{ln}: @classLabel is not 'true': no labels to learn")
                    classes = tuple(parts[1:])
                elif key == "@dimensions":
                    dims = int(value)
                elif key == "@data":
                    in_data = True
                continue
            *fields, label = line.split(":")
            if dims is not None and len(fields) != dims:
                raise DatasetError(f"{path}:{ln}: {len(fields)} dimensions, the header says {dims}")
            try:
                cols = [np.array([float(v) for v in fld.split(",")], dtype=np.float32) for fld in fields]
            except ValueError as e:
                raise DatasetError(f"{path}:{ln}: {e}") from None
            if len({len(c) for c in cols}) != 1:
                raise DatasetError(f"{path}:{ln}: dimensions of different lengths {[len(c) for c in cols]}")
            if classes is not None and label not in classes:
                raise DatasetError(f"{path}:{ln}: label {label!r} is not one of {list(classes)}")
            series.append(np.stack(cols, axis=1))
            labels.append(label)
    if classes is None or not series:
        raise DatasetError(f"{path}: no @classLabel header or no @data lines")
    return series, labels, classes


def load_basic_motions(split: str) -> Recordings:
    """aeon's BasicMotions, split "train" or "test": 40 recordings (100, 6) each, 4 activities."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = wheel_file("aeon", f"datasets/data/BasicMotions/BasicMotions_{split.upper()}.ts", "1.6.0")
    x, labels, classes = read_ts(path)
    y = np.array([classes.index(label) for label in labels], dtype=np.int64)
    channels = [{"name": n, "unit": ""} for n in ("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z")]
    return Recordings("BasicMotions", x, y, classes, BASIC_MOTIONS_RATE_HZ, channels)


def subject_folds(subjects, k: int) -> list[tuple[int, ...]]:
    """The held-out subjects of each fold of a grouped k-fold: sorted subjects dealt round-robin
    (fold i holds out the i-th, (i+k)-th, ... subject), so every subject is held out exactly once."""
    ids = sorted(set(int(s) for s in subjects))
    if not 2 <= k <= len(ids):
        raise ValueError(f"k must be between 2 and {len(ids)} (the number of subjects), got {k}")
    return [tuple(ids[i::k]) for i in range(k)]
