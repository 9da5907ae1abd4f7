"""iSeg-2017 labels and MedicalZoo's preprocessing, as MONAI transforms.

Labels: the challenge's values 0 / 10 / 150 / 250 ↔ classes 0 background, 1 CSF, 2 GM, 3 WM; any other value
is refused, naming the file and the values found.

Preprocessing (MedicalZooPytorch ``load_medical_image``), per contrast: clip to the 0.1th and 99.8th
percentiles of the whole volume (``np.percentile``, linear interpolation, background included), then

- ``"full_volume_mean"`` (MedicalZoo's default): z-score with the mean and standard deviation of the whole
  clipped volume — MONAI ``NormalizeIntensityd``; MONAI divides by the population σ, MedicalZoo (``torch.std``)
  by the sample σ, a factor √(N/(N−1)) = 1 + 7·10⁻⁸ for an iSeg volume, below float32 resolution;
- ``"nonzero"``: z-score with the statistics of the non-zero voxels, background left at 0 — MONAI
  ``NormalizeIntensityd(nonzero=True)``. (MedicalZoo's ``"mean"`` uses the same statistics but also shifts the
  background, to −μ/σ; a network is only ever run with the normalisation it was trained with);
- ``"max_min"``: (x − min) / (max − min) — MONAI ``ScaleIntensityd(minv=0, maxv=1)``.

The clipping is MONAI ``ClipIntensityPercentilesd``, which calls ``np.percentile`` on volumes of more than a
million voxels, so the values equal MedicalZoo's exactly. The two contrasts are normalised separately, then
stacked as channels (T1 first).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    ClipIntensityPercentilesd,
    ConcatItemsd,
    DeleteItemsd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    ScaleIntensityd,
    Transform,
)

from neurobundles.errors import InvalidImageError
from neurobundles.transforms.grids import MatchGridd
from neurobundles.transforms.io import LoadVolumed

__all__ = [
    "ISEG_CLASS_NAMES",
    "ISEG_LABEL_VALUES",
    "NORMALIZATIONS",
    "ClassesToISegLabels",
    "ClassesToISegLabelsd",
    "ISegIntensityd",
    "ISegLabelsToClasses",
    "ISegLabelsToClassesd",
    "NonZeroMaskd",
    "iseg_intensity",
    "iseg_preprocessing",
]

ISEG_LABEL_VALUES = (0, 10, 150, 250)
"""Label values of iSeg-2017 (and 2019) label maps, in class order."""

ISEG_CLASS_NAMES = ("background", "CSF", "GM", "WM")
NORMALIZATIONS = ("full_volume_mean", "nonzero", "max_min")
PERCENTILES = (0.1, 99.8)
"""MedicalZoo's outlier clipping, in percent."""


def _source(labels: torch.Tensor | np.ndarray, default: str) -> str:
    return str(labels.meta.get("filename_or_obj", default)) if isinstance(labels, MetaTensor) else default


def _remap(
    labels: torch.Tensor | np.ndarray, source: Sequence[int], target: Sequence[int], what: str, source_name: str
):
    """``labels`` with each value of ``source`` replaced by the matching ``target``; any other value is an error."""
    tensor = torch.as_tensor(labels)
    known = torch.as_tensor(list(source), dtype=tensor.dtype, device=tensor.device)
    bad = ~torch.isin(tensor, known)
    if bad.any():
        values, counts = torch.unique(torch.as_tensor(tensor[bad]).as_subclass(torch.Tensor), return_counts=True)
        unexpected = list(zip(values.tolist(), counts.tolist()))
        shown = ", ".join(f"{v:g} ({c} voxel{'s' if c > 1 else ''})" for v, c in unexpected[:8])
        more = f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
        raise InvalidImageError(
            f"{_source(labels, source_name)}: label values {shown}{more} are not {what} "
            f"({', '.join(f'{s} {n}' for s, n in zip(source, ISEG_CLASS_NAMES))}); "
            "check the file is the label map and was not resampled with interpolation."
        )
    out = torch.zeros_like(tensor)
    for value, new in zip(source, target):
        if new:
            out[tensor == value] = new
    if isinstance(labels, np.ndarray):
        return out.numpy()
    return out


class ISegLabelsToClasses(Transform):
    """iSeg-2017 label values 0/10/150/250 → classes 0/1/2/3 (background, CSF, GM, WM); other values: an error.

    The error names the file (from the MetaTensor's metadata) and every unexpected value with its voxel count.

    Args:
        accept_classes: also accept a map already in classes 0–3 (as MONAI Label saves the labels drawn or
            corrected in it) and return it unchanged; a map mixing both kinds of values is still an error.
    """

    def __init__(self, accept_classes: bool = False) -> None:
        self.accept_classes = accept_classes

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if self.accept_classes:
            tensor = torch.as_tensor(labels)
            known = torch.arange(len(ISEG_LABEL_VALUES), dtype=tensor.dtype, device=tensor.device)
            if bool(torch.isin(tensor, known).all()):
                return labels
        return _remap(labels, ISEG_LABEL_VALUES, range(4), "iSeg-2017 label values", "label map")


class ClassesToISegLabels(Transform):
    """Classes 0/1/2/3 → iSeg-2017 values 0/10/150/250, the challenge's submission format; other values: an error."""

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        return _remap(labels, range(4), ISEG_LABEL_VALUES, "class indices 0-3", "segmentation")


class ISegLabelsToClassesd(MapTransform):
    """Dictionary version of :class:`ISegLabelsToClasses`."""

    def __init__(
        self, keys: KeysCollection = "label", accept_classes: bool = False, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ISegLabelsToClasses(accept_classes)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ClassesToISegLabelsd(MapTransform):
    """Dictionary version of :class:`ClassesToISegLabels`."""

    def __init__(self, keys: KeysCollection = "pred", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ClassesToISegLabels()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class NonZeroMaskd(MapTransform):
    """``data[name]``: a mask of the voxels that are non-zero in any of ``keys`` (before normalisation).

    iSeg-2017's images are skull-stripped, zero outside the brain. Normalised, a patch of that background is
    constant, and instance normalisation blows the rounding noise of a constant up into confident nonsense: the
    overlapping and the non-overlapping inference alike label tiles of empty background. The bundles multiply the
    prediction by this mask (MONAI ``MaskIntensityd``), so voxels empty in every contrast stay background. An
    image that is not skull-stripped is non-zero almost everywhere and is left as it is.

    Args:
        keys: the contrasts (channel-first images on one grid).
        name: key of the mask (uint8, one channel, the first key's metadata).
    """

    def __init__(self, keys: KeysCollection, name: str = "mask", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.name = name

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        first = d[keys[0]]
        mask = torch.zeros((1, *first.shape[1:]), dtype=torch.bool, device=first.device)
        for key in keys:
            image = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
            if tuple(image.shape[1:]) != tuple(first.shape[1:]):
                raise ValueError(
                    f"{key!r} has shape {tuple(image.shape)}, {keys[0]!r} {tuple(first.shape)}: not one grid."
                )
            mask |= (image != 0).any(dim=0, keepdim=True)
        d[self.name] = (
            MetaTensor(mask.to(torch.uint8), meta=dict(first.meta)) if isinstance(first, MetaTensor) else mask
        )
        return d


def iseg_intensity(
    keys: KeysCollection = ("image", "t2"),
    normalization: str = "full_volume_mean",
    percentiles: Sequence[float] = PERCENTILES,
    allow_missing_keys: bool = False,
) -> list[MapTransform]:
    """MedicalZoo's intensity preprocessing of each of ``keys`` (one contrast each): percentile clip, then normalise.

    Args:
        keys: the contrasts, each normalised with its own statistics.
        normalization: ``"full_volume_mean"``, ``"nonzero"`` or ``"max_min"`` (see the module's description).
        percentiles: lower and upper clipping percentiles (MedicalZoo: 0.1 and 99.8).
        allow_missing_keys: skip absent keys.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
    lower, upper = (float(p) for p in percentiles)
    clip = ClipIntensityPercentilesd(keys, lower, upper, channel_wise=True, allow_missing_keys=allow_missing_keys)
    if normalization == "max_min":
        scale = ScaleIntensityd(keys, minv=0.0, maxv=1.0, channel_wise=True, allow_missing_keys=allow_missing_keys)
        return [clip, scale]
    nonzero = normalization == "nonzero"
    return [clip, NormalizeIntensityd(keys, nonzero=nonzero, channel_wise=True, allow_missing_keys=allow_missing_keys)]


class ISegIntensityd(MapTransform):
    """MedicalZoo's intensity preprocessing of each of ``keys`` as one transform: :func:`iseg_intensity` composed.

    One entry in a bundle's transform list, with the normalisation a config value.

    Args:
        keys: the contrasts, each normalised with its own statistics.
        normalization: ``"full_volume_mean"``, ``"nonzero"`` or ``"max_min"``.
        percentiles: lower and upper clipping percentiles (MedicalZoo: 0.1 and 99.8).
    """

    def __init__(
        self,
        keys: KeysCollection,
        normalization: str = "full_volume_mean",
        percentiles: Sequence[float] = PERCENTILES,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transforms = iseg_intensity(keys, normalization, percentiles, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for transform in self.transforms:
            d = transform(d)
        return d


def iseg_preprocessing(
    normalization: str = "full_volume_mean", t2_grid: str = "resample", label: bool = True
) -> list[MapTransform]:
    """From a datalist item ``{"image": T1, "t2": T2[, "label"]}`` to a 2-channel ``"image"`` (T1, T2) and classes.

    Loads each file (Analyze's trailing axis of 1 becomes MONAI's channel; 2D, 4D, empty or unreadable images
    are refused by :class:`~neurobundles.transforms.io.LoadVolumed`; the label map is read by MONAI's
    ``LoadImaged``, as in the other bundles, and checked by its values), brings T2 onto the T1's grid
    (``t2_grid``: ``"resample"`` or ``"refuse"``), refuses a label map off the T1's grid, maps label values to
    classes, clips and normalises each contrast, and stacks them; the T1's metadata (affine, file) stays with
    ``"image"``, so outputs are written in the T1's grid and header.

    Args:
        normalization: see :func:`iseg_intensity`.
        t2_grid: what to do when T2's grid differs from T1's.
        label: whether items carry a ``"label"`` (training and evaluation) — it is then required.
    """
    transforms: list[MapTransform] = [LoadVolumed(["image", "t2"])]
    transforms.append(MatchGridd("t2", reference_key="image", policy=t2_grid, mode="bilinear"))
    if label:
        load = LoadImaged("label", reader="NibabelReader", ensure_channel_first=True, image_only=True)
        transforms += [load, MatchGridd("label", reference_key="image", policy="refuse", mode="nearest")]
        transforms.append(ISegLabelsToClassesd("label"))
    transforms += iseg_intensity(("image", "t2"), normalization)
    transforms += [ConcatItemsd(["image", "t2"], name="image"), DeleteItemsd("t2")]
    return transforms
