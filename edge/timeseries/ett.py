"""ETT (Zhou et al., Informer 2021) under the Informer/S4 protocol, derived at run time from the
verbatim files in ../shared/data/ett (CC BY-ND: no modified copy is ever written).

Protocol: 12/4/4 months of train/validation/test (8,640/2,880/2,880 rows hourly, 4x that for the
15-minute sets); z-normalisation with the train split's mean and (population) std per column;
MSE and MAE on the normalised test set. A forecast made after row t covers rows t+1..t+H; the
test set scores every origin t whose H targets all lie in the test split (2,880 - H + 1 of them).
"""
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.recordings import RecordingError

DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
TARGET = "OT"
HORIZONS = (24, 48, 168, 336, 720)
MONTH_HOURS = 30 * 24
SETTINGS = ("multivariate", "univariate")


def ett_root(root=None) -> Path:
    """The ETT directory: ``root`` if given, else ``$EDGE_ETT_ROOT``, else ``../shared/data/ett``
    relative to the working directory or to the project checkout."""
    candidates = [Path(root)] if root is not None else [
        *([Path(os.environ["EDGE_ETT_ROOT"])] if os.environ.get("EDGE_ETT_ROOT") else []),
        Path.cwd().parent / "shared" / "data" / "ett",
        Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ett"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError("ETT data not found (looked in: " + ", ".join(map(str, candidates))
                            + "); pass the directory or set EDGE_ETT_ROOT")


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


@dataclass
class ETT:
    """One ETT set in one setting: the raw `values` [N, C] of the setting's channels, the train
    statistics, and the split borders."""
    name: str
    setting: str
    channels: tuple
    dates: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    borders: dict

    @property
    def z(self) -> np.ndarray:
        """The normalised series [N, C] (train statistics)."""
        return (self.values - self.mean) / self.std

    def origins(self, split: str, horizon: int) -> np.ndarray:
        """Rows t after which a forecast of t+1..t+horizon is scored: all targets inside `split`."""
        start, end = self.borders[split]
        return np.arange(start - 1, end - horizon)


def load_ett(name: str, setting: str = "multivariate", root=None) -> ETT:
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {', '.join(SETTINGS)}")
    dates, values = read_ett(dataset_path(name, root))
    borders = split_borders(name)
    if len(values) < borders["test"][1]:
        raise RecordingError(f"{len(values)} rows, the protocol needs {borders['test'][1]}", dataset_path(name, root))
    values = values[:borders["test"][1]]
    channels = CHANNELS if setting == "multivariate" else (TARGET,)
    values = values[:, [CHANNELS.index(c) for c in channels]]
    train = values[slice(*borders["train"])]
    return ETT(name, setting, channels, dates[:len(values)], values, train.mean(0), train.std(0), borders)


def future(z: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The targets of forecasts made after rows `origins`: [len(origins), horizon, C]."""
    return z[origins[:, None] + 1 + np.arange(horizon)[None, :]]


def scores(forecast: np.ndarray, truth: np.ndarray) -> dict:
    """MSE and MAE over every origin, step and channel (the Informer/S4 metric)."""
    err = forecast - truth
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}
