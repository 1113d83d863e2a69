"""Named pointwise nonlinearities.

Layers refer to activations by name (not by callable) so that export can write the name into a
bundle and the runtime can pick the matching kernel.
"""
import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,  # exact (erf) form: the runtime implements the same
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
