"""torch -> bundle: lowering to the step program, the ONNX step graph, parity, int8. Needs torch
(`pip install torch==2.13.0 && pip install edge[train]`)."""
try:
    import torch  # noqa: F401
except ImportError as e:  # say which extra, not just "No module named torch"
    raise ImportError("edge.export needs torch: pip install torch==2.13.0 && pip install 'edge[train]'") from e

from edge.export.bundle_export import export_bundle
from edge.export.lower import ExportError, lower
from edge.export.quantize import quantize_bundle

__all__ = ["export_bundle", "quantize_bundle", "lower", "ExportError"]
