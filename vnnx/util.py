"""Small shared helpers: atomic file writes."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from vnnx.errors import InputFileError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written file, and a failure (exception, Ctrl-C) leaves nothing
    behind: neither the temporary nor a truncated target.
    """
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise InputFileError(f"{target}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it ordinary file modes
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`), flushed to disk."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def process_start() -> float:
    """The ``time.monotonic()`` value at which this process started (Linux: from
    ``/proc/self/stat``, so interpreter start-up and imports are included); elsewhere, or if that
    cannot be read, the time this module was imported."""
    import time

    try:
        with open("/proc/self/stat") as fh:
            # Field 22 (after the parenthesised command, which may hold spaces): start time in
            # clock ticks after boot.
            fields = fh.read().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot
        if 0 <= age < 86400:
            return time.monotonic() - age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return _IMPORTED


def check_writable_file(path: PathLike, what: str = "output") -> Path:
    """Fail now, before any long work, if ``path`` cannot be written later: its directory must
    exist and be writable, and ``path`` must not be a directory. Returns ``Path(path)``."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InputFileError(f"{target}: {what} path is a directory")
    if not parent.is_dir():
        raise InputFileError(f"{target}: {what} directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InputFileError(f"{target}: {what} location is not writable")
    return target


def _import_time() -> float:
    import time

    return time.monotonic()


_IMPORTED = _import_time()
