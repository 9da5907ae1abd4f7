"""neurobundles: MONAI bundles for brain MRI segmentation, and the thin package they are built on."""

from . import (
    atomic,
    data,
    engines,
    errors,
    inferers,
    labels,
    losses,
    metrics,
    networks,
    outputs,
    paths,
    transforms,
    zoo,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "atomic",
    "data",
    "engines",
    "errors",
    "inferers",
    "labels",
    "losses",
    "metrics",
    "networks",
    "outputs",
    "paths",
    "transforms",
    "zoo",
]
