"""Microscopy cutouts as inference inputs: ``.npy`` arrays, TIFF stacks and NIfTI volumes, read and written alike.

A cutout is a grey-level volume of ``Z`` slices of ``Y × X`` pixels (one slice is a 2D cutout). How each format
holds it:

- ``.npy``: ``[z, y, x]`` (or ``[y, x]``), the order ``intern`` returns and the MTNeuro cache stores;
- ``.tif`` / ``.tiff``: one page per slice, each ``y`` rows by ``x`` columns (a single page is one slice);
- ``.nii`` / ``.nii.gz``: voxel axes ``i, j`` in the slice plane and ``k`` across slices, kept as they are (as MONAI's
  ``LoadImage`` reads them), with the affine.

:class:`LoadCutoutd` reads any of them as a channel-first float32 ``MetaTensor`` ``[1, Y, X, Z]`` (the layout of the
MTNeuro datasets' items: slices on the last axis; ``[1, i, j, k]`` for NIfTI) scaled to [0, 1]: ``uint8`` divided
by 255, as in training; floating-point data already in [0, 1] as they are; anything else min–max rescaled, with a
warning.
:func:`save_cutout_labels` writes a ``[Y, X, Z]`` label map back in the source's format, shape and axis order
(NIfTI with the source's header and affine), so a label map lies on its input's grid whatever the format.
:func:`cutout_datalist` turns files, folders and patterns into the datalist of an inference run.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from neurobundles.atomic import atomic_save
from neurobundles.errors import InvalidImageError, reported

from .folders import find_inputs, unique_ids

__all__ = [
    "CUTOUT_SUFFIXES",
    "LoadCutoutd",
    "cutout_datalist",
    "cutout_format",
    "cutout_stem",
    "read_cutout",
    "save_cutout_labels",
]

logger = logging.getLogger(__name__)

CUTOUT_SUFFIXES = {".npy": "npy", ".tif": "tiff", ".tiff": "tiff", ".nii": "nifti", ".nii.gz": "nifti"}
"""File suffix → format."""

_WARNINGS = "warnings"  # the data key (and " | " separator) the cohort's subject summaries read warnings from


def cutout_format(path: str | Path) -> str | None:
    """``"npy"``, ``"tiff"`` or ``"nifti"`` from a file name, or None for any other file."""
    name = Path(path).name.lower()
    for suffix in sorted(CUTOUT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return CUTOUT_SUFFIXES[suffix]
    return None


def cutout_stem(path: str | Path) -> str:
    """The file name without its cutout suffix (``a.nii.gz`` → ``a``)."""
    name = Path(path).name
    for suffix in sorted(CUTOUT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_tiff(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        pages = [np.asarray(page) for page in ImageSequence.Iterator(image)]
    shapes = {page.shape for page in pages}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InvalidImageError(
            f"{path}: the TIFF pages are not single-channel slices of one size ({sorted(shapes)}); save the cutout as "
            "a stack of grey-level pages."
        )
    return np.stack(pages)


def read_cutout(path: str | Path) -> tuple[np.ndarray, dict]:
    """A cutout as ``[Y, X, Z]`` (its own dtype) and what is needed to write labels back like it.

    Returns:
        ``(array, info)``; ``info`` holds ``format``, ``shape`` (as stored) and, for NIfTI, ``affine``.

    Raises:
        InvalidImageError: missing, empty, unreadable, of another format, or not one grey-level 2D/3D cutout.
    """
    path = Path(path)
    kind = cutout_format(path)
    if kind is None:
        raise InvalidImageError(
            f"{path}: not a cutout file; give .npy ([z, y, x] or [y, x]), .tif/.tiff stacks or .nii/.nii.gz volumes."
        )
    if not path.is_file():
        raise InvalidImageError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"{path}: the file is empty (0 bytes).")
    try:
        if kind == "npy":
            stored = np.load(path, allow_pickle=False)
        elif kind == "tiff":
            stored = _read_tiff(path)
        else:
            image = nib.load(str(path))
            stored = np.asanyarray(image.dataobj)
    except InvalidImageError:
        raise
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidImageError(f"{path}: cannot be read as a {kind} cutout ({reason}).") from error
    info: dict = {"format": kind, "shape": tuple(int(s) for s in stored.shape)}
    array = np.squeeze(stored, axis=tuple(range(3, stored.ndim))) if stored.ndim > 3 else stored
    if array.ndim not in (2, 3) or min(array.shape) < 1 or stored.dtype.kind not in "uif":
        raise InvalidImageError(
            f"{path}: holds a {stored.dtype} array of shape {stored.shape}; a cutout is one grey-level slice or stack "
            "(2D or 3D, numbers)."
        )
    if kind == "nifti":
        info["affine"] = np.asarray(image.affine)
        return (array if array.ndim == 3 else array[:, :, None]), info  # [i, j, k]
    volume = array if array.ndim == 3 else array[None]  # [z, y, x]
    return np.transpose(volume, (1, 2, 0)), info


def _scale(array: np.ndarray, source: str) -> tuple[np.ndarray, str | None]:
    """Grey levels to [0, 1] as in training (uint8 / 255); other data kept if in [0, 1], else min–max."""
    if array.dtype == np.uint8:
        return np.divide(array, 255.0, dtype=np.float32), None
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise InvalidImageError(f"{source}: contains NaN or infinite values; fix or mask them first.")
    low, high = float(values.min()), float(values.max())
    if array.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return values, None
    if high == low:
        raise InvalidImageError(f"{source}: every pixel equals {low:g}; there is nothing to segment.")
    message = (
        f"{source}: {array.dtype} grey levels {low:g}–{high:g} were rescaled to [0, 1] (min–max); the models were "
        "trained on uint8 microCT divided by 255, so export cutouts as uint8 for faithful results"
    )
    return (values - low) / (high - low), message


class LoadCutoutd(MapTransform):
    """Read cutout files (see the module docstring) as ``[1, Y, X, Z]`` float32 ``MetaTensor`` in [0, 1].

    The meta data hold ``filename_or_obj`` and ``cutout`` (format, stored shape, and the NIfTI affine), which
    :func:`save_cutout_labels` uses to write label maps back on the same grid. A rescaled input is noted in
    ``data["warnings"]`` (and logged).

    Args:
        keys: keys holding file paths.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = str(d[key])
            volume, info = read_cutout(source)
            pixels, warning = _scale(volume, source)
            if warning:
                logger.warning(warning)
                d[_WARNINGS] = " | ".join(part for part in (str(d.get(_WARNINGS) or ""), warning) if part)
            affine = info.get("affine", np.eye(4))
            meta = {"filename_or_obj": source, "cutout": {k: v for k, v in info.items() if k != "affine"}}
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(pixels[None])), affine=affine, meta=meta)
        return d


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def save_cutout_labels(labels: np.ndarray | torch.Tensor, source: str | Path, target: str | Path) -> Path:
    """Write a ``[Y, X, Z]`` label map (uint8) like the cutout ``source``: same format, axis order and shape.

    ``.npy`` and TIFF keep the source's ``[z, y, x]`` / page layout (a one-slice source gives a one-slice map);
    NIfTI copies the source's header and affine and marks the image as a label map. Written atomically.
    """
    source, target = Path(source), Path(target)
    values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if values.ndim != 3:
        raise ValueError(f"expected a [Y, X, Z] label map, got shape {values.shape}.")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"label values {values.min()}–{values.max()} do not fit uint8.")
    values = values.astype(np.uint8)
    kind = cutout_format(source)
    if cutout_format(target) != kind:
        raise ValueError(f"{target}: labels of {source} are written in its format ({kind}).")
    if kind == "nifti":
        reference = nib.load(str(source))
        data = values.reshape(reference.shape)  # [i, j, k] (+ the source's unit axes)
        header = reference.header.copy() if isinstance(reference, nib.Nifti1Image) else None
        image = nib.Nifti1Image(data, reference.affine, header)
        image.header.set_data_dtype(np.uint8)
        image.header.set_slope_inter(1.0, 0.0)
        image.header.set_intent("label")
        image.header["cal_min"], image.header["cal_max"] = 0, int(values.max(initial=0))
        atomic_save(target, lambda tmp: nib.save(image, str(tmp)))
        return target
    stack = np.transpose(values, (2, 0, 1))  # [z, y, x]
    if kind == "npy":
        stored_shape = np.load(source, mmap_mode="r", allow_pickle=False).shape  # the header only
        content = _npy_bytes(np.ascontiguousarray(stack.reshape(stored_shape)))
        atomic_save(target, lambda tmp: Path(tmp).write_bytes(content))
        return target
    from PIL import Image

    pages = [Image.fromarray(np.ascontiguousarray(page)) for page in stack]  # uint8: 8-bit grey pages

    def write_tiff(tmp: Path) -> None:
        pages[0].save(tmp, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")

    atomic_save(target, write_tiff)
    return target


@reported
def cutout_datalist(
    inputs: str | Path | Sequence[str | Path], recursive: bool = False, exclude: Sequence[str | Path] = ()
) -> list[dict[str, str]]:
    """``[{"image": path, "id": name}, ...]`` for every cutout given or found, in a stable order.

    Files found in folders or by patterns leave out this package's outputs (label maps listed by a subject summary,
    hidden temporaries) and anything inside ``exclude`` (the output folder, when it lies in an input folder);
    files named explicitly are always taken. The id is the file name without its suffix (``a.tif`` and ``a.npy``
    in one run need different names).

    Args:
        inputs: cutout files, folders and glob patterns.
        recursive: search folders recursively.
        exclude: folders whose files are never inputs.
    """
    kind = f"cutout ({', '.join(CUTOUT_SUFFIXES)})"
    paths = find_inputs(inputs, lambda path: bool(cutout_format(path)), kind, recursive, exclude)
    stems = [cutout_stem(p) for p in paths]
    ids = stems if len(set(stems)) == len(stems) else unique_ids(paths)
    return [{"image": str(path), "id": ident} for path, ident in zip(paths, ids)]
