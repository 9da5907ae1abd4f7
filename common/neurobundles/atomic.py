"""Write files so that a reader sees either the old file, no file, or the complete new one.

A file is written as ``.<name>.tmp-<random><suffix>`` beside its target and renamed onto it; a process
killed mid-write leaves only such a hidden temporary, which later runs recognise (:data:`TEMPORARY_MARK`)
and never mistake for an input. Writes that fail because the disk is full or read-only raise
:class:`~neurobundles.errors.OutputNotWritableError`, which names the file and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from neurobundles.errors import OutputNotWritableError

__all__ = [
    "MIN_FREE_BYTES",
    "TEMPORARY_MARK",
    "atomic_path",
    "atomic_save",
    "atomic_write_text",
    "check_writable_location",
    "ensure_writable_dir",
]

TEMPORARY_MARK = ".tmp-"
"""In the name of every temporary file this package writes (after the hidden target name)."""

MIN_FREE_BYTES = 64 * 2**20
"""Free space an output folder needs before a run starts (a 256³ label map and its picture take ~2 MB)."""

_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _not_writable(path: Path, error: OSError) -> OutputNotWritableError:
    advice = (
        "free some space or choose another output folder"
        if error.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose another output folder"
    )
    return OutputNotWritableError(f"{path}: cannot be written ({error.strerror or error}); {advice}.")


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=f".write-test{TEMPORARY_MARK}"):
            pass
    except OSError as error:
        raise OutputNotWritableError(
            f"{path}: output folder is not writable ({error.strerror or error}); choose another output folder."
        ) from error
    return path


def check_writable_location(path: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Check, before any work and without creating anything, that ``path`` can become a writable output folder
    with at least ``min_free_bytes`` free."""
    path = Path(path).expanduser().absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise OutputNotWritableError(f"{path}: {existing} is a file, not a folder; choose another output folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"{path}: {existing} is not writable; choose another output folder.")
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise OutputNotWritableError(
            f"{path}: only {free / 2**20:.0f} MB free on its disk; free some space or choose another output folder."
        )
    return path


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only if the block succeeds."""
    target = Path(target)
    try:
        fd, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}{TEMPORARY_MARK}", suffix=suffix or "".join(target.suffixes)
        )
    except OSError as error:
        raise _not_writable(target, error) from error
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; published files get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as error:
        if error.errno in _OUTPUT_ERRNOS:
            raise _not_writable(target, error) from error
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_save(target: str | Path, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` and publish the result at ``target`` atomically."""
    with atomic_path(target) as tmp:
        save(tmp)
