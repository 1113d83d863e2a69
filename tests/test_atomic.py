"""The one atomic write (edge.io.atomic): a reader sees the old file or the whole new one.

What is checked for real: the content after a write; the old file after a producer that raises and after
a writer process killed (SIGKILL) half-way through a large write; concurrent writers of one path; the
new file's mode; that no other module calls os.fsync (every writer goes through the one). What cannot be
checked without pulling the power: that the folder fsync makes the rename durable. The one test about the
folder fsync records the real calls (a spy that calls through) and checks one of them is on the folder.
"""
from __future__ import annotations

import ast
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.io.atomic import TEMP_SUFFIX, atomic_open, atomic_write
from edge.io.recordings import Recording, write_recording_csv

ROOT = Path(__file__).resolve().parents[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_bytes_and_text_land_whole(tmp_path):
    path = tmp_path / "out.bin"
    data = os.urandom(3 << 20)
    assert atomic_write(path, data) == path
    assert path.read_bytes() == data
    atomic_write(path, "é\n")                       # str: utf-8
    assert path.read_bytes() == "é\n".encode("utf-8")
    with atomic_open(tmp_path / "t.txt", "w") as f:
        f.write("a\nb\n")
    assert (tmp_path / "t.txt").read_text() == "a\nb\n"
    assert leftovers(tmp_path) == []


def test_a_producer_that_raises_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.npz"
    path.write_bytes(b"old")

    class Broken(RuntimeError):
        pass

    with pytest.raises(Broken):
        with atomic_open(path, "wb") as f:
            f.write(b"x" * (1 << 20))
            raise Broken
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(path, "ab"):
            pass


KILLED_WRITER = r"""
import sys, time
from edge.io.atomic import atomic_open
with atomic_open(sys.argv[1], "wb") as f:
    f.write(b"n" * (8 << 20))
    f.flush()
    print("half", flush=True)
    time.sleep(60)                       # killed here, mid-write
    f.write(b"rest")
"""


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "bundle.onnx"
    old = os.urandom(1 << 16)
    path.write_bytes(old)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE,
                            cwd=ROOT, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
        temps = leftovers(tmp_path)
        assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) == 8 << 20  # really half-written
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == old
    # no code runs after SIGKILL: the hidden temp file stays, under the documented name
    (temp,) = leftovers(tmp_path)
    assert temp.startswith(f".{path.name}.{proc.pid}.") and temp.endswith(TEMP_SUFFIX)


def test_concurrent_writers_of_one_recording_never_collide(tmp_path):
    """Each writer has its own temp file: the result is one writer's whole file (a shared "NAME.tmp"
    lets two writers truncate and rename each other's half-written file)."""
    path = tmp_path / "rec.csv"
    n = 3000
    recs = [Recording(t=np.arange(n) / 100.0, channels=["a", "b"], x=np.full((n, 2), k, np.float32),
                      units=["", ""], rate_hz=100.0) for k in range(6)]
    errors = []

    def write(rec):
        try:
            for _ in range(15):
                write_recording_csv(rec, path)
        except Exception as e:                     # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=write, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    back = np.loadtxt(path, delimiter=",", skiprows=1)
    assert back.shape == (n, 3) and len(np.unique(back[:, 1:])) == 1   # one writer's file, whole
    assert leftovers(tmp_path) == []


def test_the_new_file_gets_the_mode_open_would_give(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    atomic_write(tmp_path / "new", b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    os.chmod(tmp_path / "new", 0o640)              # replacing a file keeps its mode
    atomic_write(tmp_path / "new", b"y")
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o640


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """A spy that calls the real os.fsync and notes what each fd is: the file, then its folder."""
    seen = []
    real = os.fsync

    def spy(fd):
        seen.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "a", b"1")
    assert seen == ["file", "folder"]


def test_no_other_module_fsyncs_or_renames_into_place():
    """Every writer of state, bundles, outputs and checkpoints goes through edge.io.atomic: no other
    module calls fsync, tempfile.mkstemp, or os.replace/Path.replace onto a file it just wrote (the
    renames that set a bad file aside as NAME.bad are not writes and are allowed)."""
    wrong = []
    for folder in ("edge", "models", "export", "firmware_sim", "examples"):
        for f in (ROOT / folder).rglob("*.py"):
            if f == ROOT / "edge" / "io" / "atomic.py":
                continue
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                name = node.func.attr
                text = ast.unparse(node)
                if name in ("fsync", "mkstemp") or (name in ("replace", "rename") and ".bad" not in text
                                                    and text.startswith(("os.", "tmp", "path.with"))):
                    wrong.append(f"{f.relative_to(ROOT)}:{node.lineno}: {text}")
    assert wrong == [], "\n".join(wrong)
