"""The model zoo: streaming sequence layers with a parallel face (`forward`) and a streaming face
(`step`) that agree, task heads, and training utilities. Needs torch (`pip install edge[train]`)."""
try:
    import torch  # noqa: F401
except ImportError as e:  # say which extra, not just "No module named torch"
    raise ImportError("edge.models needs torch: pip install torch==2.13.0 && pip install 'edge[train]'") from e

from edge.models.conv import CausalConv1d
from edge.models.heads import ClassifierHead, ForecastHead, QuaternionHead
from edge.models.lmu import LMU, LegendreMemory, RecurrentLMU
from edge.models.lmuformer import LMUFormer, SpikingLMU, SpikingLMUFormer
from edge.models.recurrent import GRU, LSTM
from edge.models.s4d import S4D
from edge.models.spiking import LIF
from edge.models.stack import Activation, ChannelNorm, Pointwise, Residual, Stack, unroll
from edge.models.train import (count_parameters, fit, load_checkpoint, macs_per_step, param_groups, save_checkpoint,
                    seed_everything, summary_line)

__all__ = [
    "LSTM", "GRU", "LMU", "RecurrentLMU", "LegendreMemory", "S4D", "LIF", "CausalConv1d",
    "LMUFormer", "SpikingLMUFormer", "SpikingLMU", "QuaternionHead", "ForecastHead", "ClassifierHead",
    "Stack", "Pointwise", "Residual", "Activation", "ChannelNorm", "unroll",
    "seed_everything", "param_groups", "count_parameters", "macs_per_step", "summary_line", "fit",
    "save_checkpoint", "load_checkpoint",
]
