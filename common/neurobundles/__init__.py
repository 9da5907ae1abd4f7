"""neurobundles: MONAI bundles for brain MRI segmentation, and the thin package they are built on."""

from . import (
    bundles,
    data,
    errors,
    handlers,
    hub,
    inferers,
    labels,
    losses,
    metrics,
    networks,
    outputs,
    training,
    transforms,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "bundles",
    "data",
    "errors",
    "handlers",
    "hub",
    "inferers",
    "labels",
    "losses",
    "metrics",
    "networks",
    "outputs",
    "training",
    "transforms",
]
