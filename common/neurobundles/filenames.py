"""Image file names: which files are images, and the name a file's outputs are written under."""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIX", "beside", "image_stem", "is_image_file"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".img", ".hdr", ".img.gz")
"""NIfTI, FreeSurfer MGH and Analyze files (Analyze images are read through their ``.img``)."""

MASK_SUFFIX = "_mask"
"""A brain mask beside its image: ``<image stem>_mask.nii.gz`` (or ``.nii``, ``.mgz``)."""


def image_stem(path: str | Path) -> str:
    """File name without its (possibly double) image extension: ``sub-01_T1w.nii.gz`` → ``sub-01_T1w``."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_image_file(path: Path) -> bool:
    """An image file to read: an image suffix, and not an Analyze header (its ``.img`` is the image)."""
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.lower().endswith(".hdr")


def beside(image: str | Path, suffix: str = MASK_SUFFIX) -> str | None:
    """The file ``<stem><suffix>.nii.gz``/``.nii``/``.mgz`` next to ``image`` (a brain mask), or None."""
    path = Path(image)
    for ext in (".nii.gz", ".nii", ".mgz"):
        candidate = path.with_name(image_stem(path) + suffix + ext)
        if candidate.is_file():
            return str(candidate)
    return None
