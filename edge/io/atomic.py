"""The one atomic write: every file of state, bundles, outputs and checkpoints is written through here.

A reader of ``path`` sees either the old file or the complete new one, never a part, even when the writer
is killed or its producer raises half-way:

1. a temporary file in the same folder (a rename is atomic only within one filesystem), with a name no
   other writer uses (``.<name>.<pid>.<random>.tmp``, created exclusively), so concurrent writers of one
   path do not overwrite each other's temp file;
2. write, flush, ``os.fsync`` (the data is on disk before the name points at it);
3. ``os.replace`` onto ``path`` (atomic on POSIX and Windows);
4. ``os.fsync`` of the folder, so that the rename itself survives a power cut.

If the producer raises, the temp file is removed and ``path`` is untouched. If the process is killed
(SIGKILL, power cut) between 1 and 3, ``path`` is untouched and the hidden temp file stays behind: no code
runs to remove it, and removing other writers' temp files on the next write would race with them.

The new file gets the mode an ordinary ``open(path, "w")`` would give it: the old file's mode when it
replaces one, else 0o666 less the umask.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "atomic_open", "fsync_folder", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable. Where folders cannot be opened (Windows) or a filesystem
    refuses fsync on one (some network filesystems: EINVAL), there is nothing more to do."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:  # 32 random bits taken by another writer: draw again
            continue


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """Streaming form: ``with atomic_open(path, "w") as f: ...`` writes ``path`` atomically when the block
    ends without an exception; on one the temp file is removed and ``path`` keeps its old content.
    ``mode`` is ``"wb"`` (bytes) or ``"w"`` (text, ``encoding``)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode {mode!r}: only 'wb' and 'w' write a whole new file")
    path = Path(path)
    folder = path.parent
    try:
        keep_mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        keep_mode = None
    fd, tmp = _create_temp(path)
    try:
        if keep_mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, keep_mode)
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Bytes form: write ``data`` (bytes, or str encoded with ``encoding``) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
