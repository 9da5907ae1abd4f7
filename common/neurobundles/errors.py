"""Errors a user can act on: each names the file, what is wrong, and what to do."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["InvalidImageError", "OutputNotWritableError", "WeightsUnavailableError", "reported"]

logger = logging.getLogger("neurobundles")

Function = TypeVar("Function", bound=Callable[..., Any])


class InvalidImageError(ValueError):
    """An input image cannot be segmented (unreadable, not 3D, NaN, empty...)."""


class WeightsUnavailableError(FileNotFoundError):
    """A bundle file (weights, sample data) is neither cached, mirrored nor downloadable."""


class OutputNotWritableError(PermissionError):
    """The output location cannot be written; checked before any work starts."""


def _inside_monai_bundle() -> bool:
    return any(frame.f_globals.get("__name__", "").startswith("monai.bundle") for frame, *_ in inspect.stack(0))


def reported(function: Function) -> Function:
    """Log the errors ``function`` raises as ``neurobundles: error: …`` when a MONAI bundle config calls it.

    MONAI re-raises an error from a config expression inside its own ("Failed to evaluate ConfigExpression"), so
    ``python -m monai.bundle run`` would show the real message only deep in a long traceback; logged first, it
    is the line a user reads. Outside configs (the ``neurobundles`` command prints its own line) nothing is logged.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (OSError, ValueError, KeyError) as error:
            if not getattr(error, "_neurobundles_reported", False) and _inside_monai_bundle():
                logger.error("neurobundles: error: %s", error)
                error._neurobundles_reported = True  # type: ignore[attr-defined]
            raise

    return wrapper  # type: ignore[return-value]
