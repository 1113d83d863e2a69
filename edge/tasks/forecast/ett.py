"""ETT (Zhou et al., Informer 2021) under the Informer/S4 protocol, derived at run time from the
verbatim files in ../shared/data/ett (CC BY-ND: no modified copy is ever written).

Protocol: 12/4/4 months of train/validation/test (8,640/2,880/2,880 rows hourly, 4x that for the
15-minute sets); z-normalisation with the train split's mean and (population) std per column;
MSE and MAE on the normalised test set. A forecast made after row t covers rows t+1..t+H; the
test set scores every origin t whose H targets all lie in the test split (2,880 - H + 1 of them).
"""
from dataclasses import dataclass

import numpy as np

from edge.io.datasets import CHANNELS, dataset_path, read_ett, split_borders
from edge.io.recordings import RecordingError

TARGET = "OT"
HORIZONS = (24, 48, 168, 336, 720)
SETTINGS = ("multivariate", "univariate")


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
