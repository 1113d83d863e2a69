"""edge: a streaming runtime for recurrent, state-space and spiking models.

Importing this package is light on purpose (no torch, no exporter): the daemon imports it.
"""
__version__ = "0.1.0"


def load(bundle_or_name, engine: str = "auto", threads: int = 1):
    """Load a bundle on the Numba or onnxruntime engine (see `edge.runtime.load`)."""
    from edge.runtime import load as _load
    return _load(bundle_or_name, engine=engine, threads=threads)
