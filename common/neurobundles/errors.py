"""Errors a user can act on: each names the file, what is wrong, and what to do."""

from __future__ import annotations

__all__ = ["InvalidImageError", "OutputNotWritableError", "WeightsUnavailableError"]


class InvalidImageError(ValueError):
    """An input image cannot be segmented (unreadable, not 3D, NaN, empty...)."""


class WeightsUnavailableError(FileNotFoundError):
    """A bundle file (weights, sample data) is neither cached, mirrored nor downloadable."""


class OutputNotWritableError(PermissionError):
    """The output location cannot be written; checked before any work starts."""
