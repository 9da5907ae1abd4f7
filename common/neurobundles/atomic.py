"""Write files so that a reader sees either the old file, no file, or the complete new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from neurobundles.errors import OutputNotWritableError

__all__ = ["atomic_path", "atomic_save", "atomic_write_text", "ensure_writable_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is writable, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OutputNotWritableError(
            f"{path}: output folder is not writable ({error.strerror or error}); choose another output folder."
        ) from error
    return path


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only if the block succeeds."""
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix or "".join(target.suffixes))
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; published files get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_save(target: str | Path, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` and publish the result at ``target`` atomically."""
    with atomic_path(target) as tmp:
        save(tmp)
