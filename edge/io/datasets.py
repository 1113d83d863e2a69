"""Where the real recordings live and how to read the public sets the project evaluates on: BROAD
(IMU attitude, CC BY 4.0) and ETT (sensor series, CC BY-ND, read verbatim, never rewritten).

Each set is found at ``root`` if given, else at the path in its environment variable, else in
``../shared/data/<set>`` beside the working directory or beside the project checkout.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edge.io.recordings import RecordingError

CHECKOUT = Path(__file__).resolve().parents[2]

BROAD_TEST_TRIALS = frozenset({3, 5, 7, 9, 12, 16, 21, 25, 27, 29, 35})
DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
MONTH_HOURS = 30 * 24


def data_root(name: str, env: str, root=None) -> Path:
    """The folder of data set ``name``: ``root``, else ``$env``, else ``../shared/data/<name>``."""
    if root is not None:
        candidates = [Path(root)]
    else:
        candidates = [*([Path(os.environ[env])] if os.environ.get(env) else []),
                      Path.cwd().parent / "shared" / "data" / name, CHECKOUT.parent / "shared" / "data" / name]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"{name} data not found (looked in: " + ", ".join(map(str, candidates))
                            + f"); pass the directory or set {env}")


# ----------------------------------------------------------------------------------------- BROAD

def broad_root(root=None) -> Path:
    """The BROAD directory (`data_root`, ``$EDGE_BROAD_ROOT``)."""
    return data_root("broad", "EDGE_BROAD_ROOT", root)


def broad_trial_number(path) -> int:
    """The leading trial number of a BROAD file name (``03_undisturbed_...npz`` -> 3)."""
    head = Path(path).name.split("_", 1)[0]
    if not head.isdigit():
        raise ValueError(f"not a BROAD trial file name: {Path(path).name}")
    return int(head)


def broad_trials(root=None, split: str = "train") -> list[Path]:
    """BROAD trial files, sorted by trial number: ``split`` is ``"train"`` (19 trials here),
    ``"test"`` (trials 03, 05, 07, 09, 12, 16, 21, 25, 27, 29, 35: report only, never tune on them)
    or ``"all"``."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    base = broad_root(root)
    files = sorted((p for p in base.glob("*.npz") if p.name.split("_", 1)[0].isdigit()),
                   key=broad_trial_number)
    if not files:
        raise FileNotFoundError(f"no BROAD trial files (NN_name.npz) in {base}")
    if split == "all":
        return files
    test = split == "test"
    return [p for p in files if (broad_trial_number(p) in BROAD_TEST_TRIALS) == test]


# ------------------------------------------------------------------------------------------- ETT

def ett_root(root=None) -> Path:
    """The ETT directory (`data_root`, ``$EDGE_ETT_ROOT``)."""
    return data_root("ett", "EDGE_ETT_ROOT", root)


def dataset_path(name: str, root=None) -> Path:
    if name not in DATASETS:
        raise ValueError(f"unknown ETT dataset {name!r}; choose one of {', '.join(DATASETS)}")
    base = ett_root(root)
    for p in (base / f"{name}.csv", base / f"{name}.csv.gz"):
        if p.exists():
            return p
    raise FileNotFoundError(f"{base}: neither {name}.csv nor {name}.csv.gz")


def read_ett(path) -> tuple[np.ndarray, np.ndarray]:
    """(dates [N] datetime64[s], values [N, 7] float64 in the order of CHANNELS) from an ETT CSV
    (plain or .gz). A missing column, a short row or a cell that is not a finite number is a
    RecordingError naming the file, the line and the column."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise RecordingError(f"cannot read: {e}", path) from None
    if not lines:
        raise RecordingError("empty file", path)
    header = [h.strip() for h in lines[0].split(",")]
    missing = [c for c in ("date", *CHANNELS) if c not in header]
    if missing:
        raise RecordingError(f"header lacks column(s) {', '.join(missing)} (has: {', '.join(header)})", path, 1)
    cols = [header.index(c) for c in CHANNELS]
    date_col = header.index("date")
    dates, values = [], np.empty((len(lines) - 1, len(CHANNELS)))
    n = 0
    for ln, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != len(header):
            raise RecordingError(f"{len(cells)} cells, the header has {len(header)}", path, ln)
        for k, c in enumerate(cols):
            try:
                v = float(cells[c])
            except ValueError:
                v = float("nan")
            if not np.isfinite(v):
                raise RecordingError(f"column {CHANNELS[k]}: {cells[c]!r} is not a finite number", path, ln)
            values[n, k] = v
        try:
            dates.append(np.datetime64(cells[date_col].strip().replace(" ", "T"), "s"))
        except ValueError:
            raise RecordingError(f"column date: {cells[date_col]!r} is not a date-time", path, ln) from None
        n += 1
    return np.array(dates, dtype="datetime64[s]"), values[:n]


def split_borders(name: str) -> dict:
    """Row ranges [start, end) of the train, val and test splits (Informer's border2s)."""
    rows = MONTH_HOURS * (4 if name.startswith("ETTm") else 1)
    return {"train": (0, 12 * rows), "val": (12 * rows, 16 * rows), "test": (16 * rows, 20 * rows)}
