"""Executors of bundle step programs. Kept light: importing this package imports no numba,
onnxruntime or torch; each executor module is imported when it is first asked for."""

__all__ = ["NumbaExecutor", "UnsupportedOp"]


def __getattr__(name):  # PEP 562: `from edge.engine import NumbaExecutor` imports numba only then
    if name in ("NumbaExecutor", "UnsupportedOp"):
        from edge.engine import numba_engine
        return getattr(numba_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
