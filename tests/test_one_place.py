"""One fact in one place: the unit g is written once (edge.validate.STANDARD_GRAVITY, re-exported by edge.io.recordings); a sensor's
own gravity is data (a parameter with a default), never a second unit constant."""
from __future__ import annotations

import ast
from pathlib import Path

from edge.io.recordings import STANDARD_GRAVITY

ROOT = Path(__file__).resolve().parents[1]
CODE = ("edge", "models", "export", "firmware_sim", "examples", "bench")


def python_files():
    for folder in CODE:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_standard_gravity_is_the_si_value():
    assert STANDARD_GRAVITY == 9.80665          # CGPM 1901, exact by definition


def test_the_unit_g_is_written_once():
    """9.80665 appears as a number only where STANDARD_GRAVITY is defined (edge/validate.py); no module defines its own
    gravity constant (a name with GRAV or a bare G bound to a number near 9.8), except data that says so."""
    allowed_data = {("firmware_sim/imu.py", "BROAD_LOCAL_GRAVITY")}   # a sensor's local gravity: a default
    wrong = []
    for f in python_files():
        rel = f.relative_to(ROOT).as_posix()
        tree = ast.parse(f.read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == 9.80665 and rel != "edge/validate.py":
                wrong.append(f"{rel}:{node.lineno}: the literal 9.80665 (use STANDARD_GRAVITY)")
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, float) and 9.7 < node.value.value < 9.9:
                for t in node.targets:
                    name = getattr(t, "id", "")
                    if (name == "G" or "GRAV" in name.upper()) and (rel, name) not in allowed_data \
                            and not (rel == "edge/validate.py" and name == "STANDARD_GRAVITY"):
                        wrong.append(f"{rel}:{node.lineno}: {name} = {node.value.value}")
    assert wrong == [], "\n".join(wrong)
