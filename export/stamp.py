"""Stamp bundles with the integrity hash of their weights (docs/bundle.md, "Integrity"), in place:

    python -m edge.export.stamp                  # every bundle shipped in edge/bundles
    python -m edge.export.stamp FILE.onnx ...

Only the metadata's ``integrity`` entry changes; stamping again gives the same bytes. A bundle whose
weights are not finite is refused (nothing is written)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from edge.bundle import BUNDLE_DIR, METADATA_KEY, BundleError, check_weights, write_metadata
from edge.io.atomic import atomic_write


def stamp(path) -> bool:
    """Stamp one bundle; True when its bytes changed."""
    import onnx
    from onnx import numpy_helper
    data = Path(path).read_bytes()
    proto = onnx.load_from_string(data)
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props[METADATA_KEY])
    meta.pop("integrity", None)
    check_weights(path, meta, {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer})
    write_metadata(proto, meta)
    out = proto.SerializeToString()
    if out != data:
        atomic_write(path, out)
    return out != data


def main(argv=None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)] or sorted(BUNDLE_DIR.glob("*.onnx"))
    for p in paths:
        try:
            changed = stamp(p)
        except (OSError, KeyError, ValueError) as e:       # BundleError is a ValueError
            msg = str(e) if isinstance(e, BundleError) else f"bundle {p}: {e}"
            print(f"edge.export.stamp: {msg}", file=sys.stderr)
            return 2
        print(f"{p}: {'stamped' if changed else 'already stamped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
