"""Files the project reads and writes on the user's disk: regular files only, writes atomic.

Reads refuse anything that is not a regular file (a FIFO would block forever, a
device could read without end) and never open a FIFO: the type is checked with
``os.stat`` before ``open``, and the open itself is non-blocking in case the path
changed in between. Writes go to a temporary file in the same folder, then
``os.replace``: readers see the old file or the new one, never a part.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class NotRegularFileError(OSError):
    """The path exists but is a folder, FIFO, socket or device."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def require_regular(path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotRegularFileError` unless ``path`` is a regular file (symlinks followed)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"{os.fspath(path)} is {_kind(mode)}, not a regular file")


def read_bytes(path: str | os.PathLike[str], limit: int = 1 << 30) -> bytes:
    """The bytes of a regular file, at most ``limit`` of them (OSError beyond)."""
    require_regular(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped after the check above
            raise NotRegularFileError(f"{os.fspath(path)} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{os.fspath(path)} is larger than {limit} bytes")
    return data


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_copy(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, with ``path``'s permissions (0o644 for a new file)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o644
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _encode(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (str: UTF-8) atomically; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_copy(path, _encode(data))
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def create_exclusive(path: str | os.PathLike[str], data: bytes | str) -> bool:
    """Create ``path`` with ``data`` atomically; False (nothing written) when it already exists."""
    path = Path(path)
    tmp = _temp_copy(path, _encode(data))
    try:
        os.link(tmp, path)  # fails when path exists: exclusive and atomic
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True
