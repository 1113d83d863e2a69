"""Reading and validating bundles (docs/bundle.md). No torch, no exporter: `onnx` for the file,
numpy for the weights."""
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = "edge.bundle/1"
DIALOGUE_SCHEMA = "edge.dialogue-lm/1"     # a decoder LM in the common layout (edge.tasks.dialogue runs it)
METADATA_KEY = "edge"
REQUIRED = ("schema", "task", "inputs", "outputs", "state", "program")
BUNDLE_DIR = Path(__file__).with_name("bundles")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"bundle {path}: {problem}")
        self.path, self.problem = str(path), problem


def state_input(name: str) -> str:
    return f"state.{name}"


def state_output(name: str) -> str:
    return f"state.{name}.next"


@dataclass
class Bundle:
    path: str
    meta: dict
    model_bytes: bytes
    weights: dict = field(repr=False)

    @property
    def input_size(self) -> int:
        return len(self.meta["inputs"])

    @property
    def output_size(self) -> int:
        return len(self.meta["outputs"])

    @property
    def state_floats(self) -> int:
        return sum(int(np.prod(s["shape"])) for s in self.meta["state"])

    @property
    def parameter_count(self) -> int:
        return sum(w.size for w in self.weights.values())


def resolve(name_or_path) -> Path:
    """A path to an .onnx file, or the name of a bundle shipped in the package."""
    p = Path(name_or_path)
    if p.suffix == ".onnx" or p.exists():
        return p
    shipped = BUNDLE_DIR / f"{name_or_path}.onnx"
    if shipped.exists():
        return shipped
    names = sorted(q.stem for q in BUNDLE_DIR.glob("*.onnx"))
    raise BundleError(name_or_path, f"no such file, and no shipped bundle of that name (shipped: {', '.join(names) or 'none'})")


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _load(path):
    """(bytes, onnx model, metadata document) of an ONNX file with edge metadata, not yet validated."""
    import onnx  # metadata and initializers only
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BundleError(path, f"cannot read: {e.strerror}") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises its own DecodeError types
        raise BundleError(path, f"not an ONNX model (truncated or another format): {type(e).__name__}") from None
    if not model.graph.node and not model.graph.output:
        raise BundleError(path, "not an ONNX model: the graph is empty (truncated or another format)")
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise BundleError(path, f"no '{METADATA_KEY}' metadata: an ONNX file, but not an edge bundle")
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise BundleError(path, f"metadata is not valid JSON ({e.msg} at char {e.pos})") from None
    return data, model, meta


def read_schema(name_or_path) -> str | None:
    """The metadata schema of a bundle (`SCHEMA` for step bundles, `DIALOGUE_SCHEMA` for decoders)."""
    meta = _load(resolve(name_or_path))[2]
    return meta.get("schema") if isinstance(meta, dict) else None


def read_bundle(name_or_path) -> Bundle:
    from onnx import numpy_helper  # metadata and initializers only

    path = resolve(name_or_path)
    data, model, meta = _load(path)
    validate(path, meta, model)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    check_weights(path, meta, weights)
    return Bundle(str(path), meta, data, weights)


# ------------------------------------------------------------------------------ weight integrity
# The metadata's ``integrity`` holds a SHA-256 of every weight tensor (its name, dtype, shape and
# little-endian bytes) and one over all of them. `write_metadata` stamps it; `read_bundle` checks it
# and that every float weight is finite, and refuses a bundle naming the first tensor at fault.

def _tensor_digest(name: str, w: np.ndarray) -> str:
    h = hashlib.sha256()
    w = np.ascontiguousarray(w)
    h.update(f"{name}\0{w.dtype.newbyteorder('<').str}\0{list(w.shape)}\0".encode())
    h.update(w.astype(w.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def integrity_stamp(weights: dict) -> dict:
    """{"algorithm", "weights_sha256" (over all tensors), "tensors": {name: sha256}} of the weights."""
    tensors = {name: _tensor_digest(name, w) for name, w in sorted(weights.items())}
    total = hashlib.sha256("".join(f"{n}:{d}\n" for n, d in tensors.items()).encode()).hexdigest()
    return {"algorithm": "sha256", "weights_sha256": total, "tensors": tensors}


def check_weights(path, meta: dict, weights: dict) -> None:
    """Refuse weights that differ from the metadata's hash (bit flips, edits after export) or are not
    finite. A bundle without an ``integrity`` entry (written before it existed) is not hash-checked."""
    stamp = meta.get("integrity") if isinstance(meta, dict) else None
    if stamp is not None:
        want = stamp.get("tensors") if isinstance(stamp, dict) else None
        if not isinstance(want, dict):
            raise BundleError(path, "metadata 'integrity' has no tensor hashes")
        for name in sorted(set(want) - set(weights)):
            raise BundleError(path, f"weight tensor {name!r} is in the metadata's hashes but not in the graph")
        for name, w in weights.items():
            if name not in want:
                raise BundleError(path, f"weight tensor {name!r} is not in the metadata's hashes (added after export?)")
            if _tensor_digest(name, w) != want[name]:
                raise BundleError(path, f"weight tensor {name!r} does not match its SHA-256 in the metadata "
                                        f"(flipped bits or an edit after export): refused")
    for name, w in weights.items():
        if w.dtype.kind in "fc" and not np.isfinite(w).all():
            bad = int((~np.isfinite(w)).sum())
            raise BundleError(path, f"weight tensor {name!r} holds {bad} NaN/Inf value(s) of {w.size}: refused")


def verify_file(path, data: bytes) -> None:
    """`check_weights` for an ONNX file that is not read by `read_bundle` (e.g. a dialogue decoder)."""
    import onnx
    from onnx import numpy_helper
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises its own DecodeError types
        raise BundleError(path, f"not an ONNX model (truncated or another format): {type(e).__name__}") from None
    props = {p.key: p.value for p in model.metadata_props}
    try:
        meta = json.loads(props.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError as e:
        raise BundleError(path, f"metadata is not valid JSON ({e.msg} at char {e.pos})") from None
    check_weights(path, meta, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer})


def validate(path, meta: dict, model) -> None:
    if not isinstance(meta, dict):
        raise BundleError(path, "metadata is not a JSON object")
    if meta.get("schema") != SCHEMA:
        raise BundleError(path, f"metadata schema {meta.get('schema')!r} is not supported (this runtime reads {SCHEMA!r})")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise BundleError(path, f"metadata lacks {', '.join(missing)}")
    inputs = {i.name: _dims(i) for i in model.graph.input}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    for name, n in (("x", len(meta["inputs"])), ("y", len(meta["outputs"]))):
        dims = inputs.get(name) if name == "x" else outputs.get(name)
        if dims is None:
            raise BundleError(path, f"graph has no '{name}'")
        if dims[1:] != [n]:
            raise BundleError(path, f"graph '{name}' has shape {dims}, metadata says [batch, {n}]")
    for spec in meta["state"]:
        name, shape = spec.get("name"), spec.get("shape")
        if not isinstance(name, str) or not isinstance(shape, list):
            raise BundleError(path, f"state entry {spec!r} needs a name and a shape")
        for graph_names, key in ((inputs, state_input(name)), (outputs, state_output(name))):
            if key not in graph_names:
                raise BundleError(path, f"state '{name}' has no graph tensor '{key}'")
            if graph_names[key][1:] != shape:
                raise BundleError(path, f"state '{name}': metadata shape {shape}, graph tensor '{key}' has "
                                        f"{graph_names[key][1:]}")
    extra = set(inputs) - {"x"} - {state_input(s["name"]) for s in meta["state"]}
    if extra:
        raise BundleError(path, f"graph inputs {sorted(extra)} are not in the metadata's state list")


def write_metadata(model, meta: dict) -> None:
    """Set the bundle's metadata document on an onnx ModelProto (replacing any earlier one), with the
    integrity stamp of the proto's weights (``meta["integrity"]``, updated in place)."""
    from onnx import numpy_helper
    meta["integrity"] = integrity_stamp({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=False)

