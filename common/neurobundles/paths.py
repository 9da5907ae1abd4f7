"""Every location the package reads from the environment, in one place.

``NEUROBUNDLES_HOME``     cache for fetched weights, sample data and compiled kernels
                          (default ``$XDG_CACHE_HOME/neurobundles``, i.e. ``~/.cache/neurobundles``)
``NEUROBUNDLES_DATA``     a local mirror of the public files, laid out like the cache
                          (default ``../shared/data`` beside a source checkout, when it exists)
``NEUROBUNDLES_BUNDLES``  the folder of bundles that ``neurobundles`` commands find by name
                          (default the source checkout's ``bundles/``)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BUNDLES_ENV",
    "DATA_ENV",
    "HOME_ENV",
    "bundles_dir",
    "cache_dir",
    "checkout_root",
    "data_dir",
    "kernels_dir",
]

HOME_ENV = "NEUROBUNDLES_HOME"
DATA_ENV = "NEUROBUNDLES_DATA"
BUNDLES_ENV = "NEUROBUNDLES_BUNDLES"


def checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install), or ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "common" / "neurobundles").is_dir() and (root / "bundles").is_dir() else None


def cache_dir() -> Path:
    """``NEUROBUNDLES_HOME``, else ``$XDG_CACHE_HOME/neurobundles`` (``~/.cache/neurobundles``)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "neurobundles"


def kernels_dir() -> Path:
    """Where compiled CPU kernels are kept (one shared library per layer shape and CPU)."""
    return cache_dir() / "kernels"


def data_dir() -> Path | None:
    """The local mirror: ``NEUROBUNDLES_DATA``, else ``../shared/data`` beside a source checkout."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    root = checkout_root()
    beside_checkout = root.parent / "shared" / "data" if root is not None else None
    return beside_checkout if beside_checkout is not None and beside_checkout.is_dir() else None


def bundles_dir() -> Path | None:
    """``NEUROBUNDLES_BUNDLES``, else the ``bundles/`` folder of the source checkout (``None`` without either)."""
    if os.environ.get(BUNDLES_ENV):
        return Path(os.environ[BUNDLES_ENV]).expanduser()
    root = checkout_root()
    return root / "bundles" if root is not None else None
