"""An int8 variant of a bundle through onnxruntime's dynamic quantisation: weights of every
MatMul/Gemm stored as int8 (per output channel), activations quantised on the fly. The task metric
is measured on the fp32 and the int8 bundle in the same call and written into the metadata.

The int8 graph runs on onnxruntime only: the Numba engine's integer kernels are a separate,
bit-exact reference (firmware_sim), not this graph.
"""
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edge.bundle import read_bundle, write_metadata
from edge.io.atomic import atomic_write


def quantize_bundle(src, dst, stream: np.ndarray, metric=None, metric_name: str | None = None,
                    per_channel: bool = True) -> dict:
    """Write the int8 variant of bundle `src` to `dst`.

    stream: (T, streams, C) float32 samples to evaluate on. metric(model) -> float, computed on the
    fp32 and the int8 bundle (e.g. inclination RMSE on a recording); by default, the RMS difference
    between the int8 and the fp32 outputs on `stream`. Returns the metadata's `int8` entry."""
    import edge
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnxruntime as ort

    fp32 = read_bundle(src)
    with tempfile.TemporaryDirectory() as tmp:
        folded, out = Path(tmp) / "folded.onnx", Path(tmp) / "int8.onnx"
        # Fold the weight transposes first: the quantiser only converts a MatMul whose weight is an
        # initializer, and the step graph transposes its weights at run time.
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folded)
        ort.InferenceSession(fp32.model_bytes, opts, providers=["CPUExecutionProvider"])
        quantize_dynamic(folded, out, weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul", "Gemm"])
        proto = onnx.load(out)
    meta = dict(fp32.meta)
    meta["int8"] = {"method": "onnxruntime quantize_dynamic: int8 weights"
                              + (" per output channel" if per_channel else "") + ", activations per call"}
    write_metadata(proto, meta)
    atomic_write(dst, proto.SerializeToString())

    reference = edge.load(src, engine="onnxruntime")
    quantized = edge.load(dst, engine="onnxruntime")
    if metric is None:
        y32 = reference.block(stream, reference.init_state(stream.shape[1])).copy()
        metric = lambda m: float(np.sqrt(np.mean((m.block(stream, m.init_state(stream.shape[1])) - y32) ** 2)))
        metric_name = "rms output difference from fp32"
    entry = {**meta["int8"], "metric": metric_name or getattr(metric, "__name__", "metric"),
             "fp32": metric(reference), "int8": metric(quantized),
             "bytes_fp32": Path(src).stat().st_size, "bytes_int8": Path(dst).stat().st_size}
    meta["int8"] = entry
    write_metadata(proto, meta)
    atomic_write(dst, proto.SerializeToString())
    return entry
