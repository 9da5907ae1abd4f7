"""Axial slices of multi-modal volumes for a 2D network (MRISeg's SegNet on BraTS): masks, normalisation, layout.

Training reads each case once (the sequences stacked as channels, the label map turned into the whole-tumour mask,
normalised, laid out slice after slice: :func:`volume_transforms`, or the bundles' configs) into a MONAI dataset —
``CacheDataset(copy_cache=False, as_contiguous=False)`` when the cases fit in memory — and
:class:`neurobundles.data.SliceDataset` serves one item per axial slice from it, every slice of every case (155
for BraTS; the seed's loader served 154 and mixed cases by ``ceil(idx / 155)``). The slice-major layout
(:class:`SliceMajor`) makes serving a slice about ten times cheaper (0.15 against 1.4 CPU ms for 3 × 240²);
MONAI's default ``as_contiguous=True`` would undo it.

Normalisation (``normalise``, :class:`InputIntensity`):

- ``"minmax"`` (the seed): each slice's channel stack rescaled jointly to [0, 1] by its own minimum and
  maximum over all channels (MONAI ``ScaleIntensity(channel_wise=False)`` per slice; :class:`SliceMinMax` does
  every slice of a volume at once, identically); an all-zero slice stays zero.
- ``"zscore"``: each channel of the volume standardised over its brain voxels (non-zero, BraTS being
  skull-stripped with a background of exactly 0; MONAI ``NormalizeIntensity(nonzero=True, channel_wise=True)``),
  background left at 0.

Inference runs a whole (B, C, H, W, D) volume through the 2D network slice by slice with MONAI's
``SliceInferer(roi_size=(-1, -1), spatial_dim=2, sw_batch_size=...)`` and gets (B, 1, H, W, D) back on the input
grid; ``-1`` takes whole slices of any size, and :class:`~neurobundles.networks.segnet.SegNet` restores any side
of at least 32 pixels, so no padding or cropping is needed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensity,
    NormalizeIntensityd,
    ScaleIntensityd,
    Spacing,
    Transform,
)
from monai.transforms.inverse import InvertibleTransform
from monai.utils import ensure_tuple_rep

__all__ = [
    "NORMALISATIONS",
    "InputIntensity",
    "InputIntensityd",
    "SliceMajor",
    "SliceMajord",
    "SliceMinMax",
    "SliceMinMaxd",
    "VoxelSpacingd",
    "WholeTumour",
    "WholeTumourd",
    "slice_transforms",
    "volume_transforms",
]

NORMALISATIONS = ("minmax", "zscore")
"""``minmax``: the seed's joint min-max of each slice; ``zscore``: per-channel z-score over brain voxels."""


def _source(label: torch.Tensor | np.ndarray) -> str:
    meta = getattr(label, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "label map")


class WholeTumour(Transform):
    """Label map → whole-tumour mask (``label > 0``: necrotic core, oedema and enhancing tumour together).

    Args:
        allowed: the label values a map may hold (BraTS: 0, 1, 2, 4); others raise ``ValueError`` naming the
            file and the values. None accepts anything.
        dtype: dtype of the mask (float for ``BCEWithLogitsLoss``).
    """

    def __init__(self, allowed: Sequence[int] | None = (0, 1, 2, 4), dtype: torch.dtype = torch.float32) -> None:
        self.allowed = None if allowed is None else {int(v) for v in allowed}
        self.dtype = dtype

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        values = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
        if self.allowed is not None:
            present = torch.unique(values).tolist()
            bad = [v for v in present if v not in self.allowed]
            if bad:
                shown = ", ".join(f"{v:g}" for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
                raise ValueError(
                    f"{_source(label)}: label values {shown} are not among {tuple(sorted(self.allowed))}; "
                    "is this a BraTS 2017–2020 label map (BraTS 2023 writes 3 for enhancing tumour), "
                    "or an image given as the label?"
                )
        mask = (values > 0).to(self.dtype)
        if isinstance(label, MetaTensor):
            return MetaTensor(mask, meta=label.meta, applied_operations=label.applied_operations)
        return mask


class WholeTumourd(MapTransform):
    """Dictionary version of :class:`WholeTumour`."""

    def __init__(
        self,
        keys: KeysCollection,
        allowed: Sequence[int] | None = (0, 1, 2, 4),
        dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = WholeTumour(allowed, dtype)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class SliceMinMax(Transform):
    """The seed's min-max for a whole volume: every slice's channel stack rescaled jointly to [minv, maxv].

    Equal, slice by slice, to ``ScaleIntensity(minv, maxv, channel_wise=False)`` on that slice (a constant slice
    becomes ``minv`` times itself, so an empty slice stays 0); use it before ``SliceInferer`` at inference.

    Args:
        axis: spatial axis the slices are taken across (2: axial slices of a (C, H, W, D) volume).
        minv: value of each slice's minimum.
        maxv: value of each slice's maximum.
    """

    def __init__(self, axis: int = 2, minv: float = 0.0, maxv: float = 1.0) -> None:
        self.axis, self.minv, self.maxv = int(axis), float(minv), float(maxv)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        values = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        values = values.float()
        others = tuple(d for d in range(values.ndim) if d != self.axis + 1)
        low, high = values.amin(dim=others, keepdim=True), values.amax(dim=others, keepdim=True)
        span = (high - low).clamp_min(torch.finfo(values.dtype).tiny)
        scaled = (values - low) / span * (self.maxv - self.minv) + self.minv
        out = torch.where(high > low, scaled, values * self.minv)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
        return out


class SliceMinMaxd(MapTransform):
    """Dictionary version of :class:`SliceMinMax`."""

    def __init__(
        self,
        keys: KeysCollection,
        axis: int = 2,
        minv: float = 0.0,
        maxv: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = SliceMinMax(axis, minv, maxv)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


class InputIntensity(Transform):
    """The SegNet bundles' input normalisation of a (C, H, W, D) volume: ``"minmax"`` or ``"zscore"`` (module doc).

    ``"minmax"`` gives every axial slice the seed's joint min-max (:class:`SliceMinMax`), so a whole volume
    normalised once equals its slices normalised one by one in training; ``"zscore"`` standardises each channel
    over the volume's non-zero voxels.

    Args:
        method: ``"minmax"`` or ``"zscore"``.
        axis: spatial axis the slices are taken across (2: axial slices of an LPS volume).
    """

    def __init__(self, method: str = "minmax", axis: int = 2) -> None:
        if method not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {method!r}.")
        self.method = method
        self.scaler = SliceMinMax(axis) if method == "minmax" else NormalizeIntensity(nonzero=True, channel_wise=True)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.method == "zscore":
            img = img.float() if isinstance(img, torch.Tensor) and not img.is_floating_point() else img
        return self.scaler(img)


class InputIntensityd(MapTransform):
    """Dictionary version of :class:`InputIntensity`."""

    def __init__(
        self, keys: KeysCollection, method: str = "minmax", axis: int = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normaliser = InputIntensity(method, axis)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normaliser(d[key])
        return d


class VoxelSpacingd(MapTransform, InvertibleTransform):
    """Resample to ``pixdim`` (MONAI's ``Spacing``, invertible by ``Invertd``), leaving other keys alone.

    MONAI 1.6.1's ``Spacingd`` also copies the image's metadata into every key named ``<key>_*`` it finds, taking
    them for metadata dictionaries; MONAI Label's ``image_path`` (a string) then makes it fail. This is the same
    resampling without that step.

    Args:
        keys: images to resample.
        pixdim: voxel size in mm per axis; a value <= 0 keeps that axis's own (``[1, 1, 0]``: 1 mm in-plane,
            slices as thick as they are).
        mode: interpolation, one per key or one for all (``"bilinear"``; ``"nearest"`` for label maps).
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixdim: Sequence[float] | float,
        mode: str | Sequence[str] = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.spacing = Spacing(pixdim=pixdim)
        self.mode = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.spacing(d[key], mode=mode)
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.spacing.inverse(d[key])
        return d


class SliceMajor(Transform):
    """Lay a (C, H, W, D) volume out in memory slice after slice; its shape and values do not change.

    Reading slice k of an ordinary volume gathers every D-th value (about 5 ms for 3 × 240²); laid out slice by
    slice it is one contiguous block, copied in a fraction of that. Put it last in the cached volume transforms.

    Args:
        axis: spatial axis the slices are taken across.
    """

    def __init__(self, axis: int = 2) -> None:
        self.axis = int(axis)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        dim = self.axis + 1
        return img.movedim(dim, 0).contiguous().movedim(0, dim)


class SliceMajord(MapTransform):
    """Dictionary version of :class:`SliceMajor`."""

    def __init__(self, keys: KeysCollection, axis: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.layout = SliceMajor(axis)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.layout(torch.as_tensor(d[key]))
        return d


def volume_transforms(
    normalise: str = "minmax",
    modalities: Sequence[str] = ("t1", "t2", "flair"),
    image_key: str = "image",
    label_key: str = "label",
    allowed: Sequence[int] | None = (0, 1, 2, 4),
    dtype: torch.dtype = torch.float32,
    label_dtype: torch.dtype = torch.uint8,
) -> Compose:
    """Per-case transforms of a datalist item (``{<modality>: path, ..., "label": path}``): the sequences loaded and
    stacked as channels (C, H, W, D) in ``modalities`` order, the whole-tumour mask, the z-score for ``"zscore"``,
    then a slice-major memory layout (:class:`SliceMajord`) so that slices are copied quickly.

    The min-max of ``"minmax"`` is left to :func:`slice_transforms` (the seed's order); the bundles normalise whole
    volumes instead (:class:`InputIntensityd`), which gives the same slices. A missing label (validation cases) is
    skipped. Images are kept as ``dtype``, masks as ``label_dtype`` (uint8: 9 MB a BraTS case instead of 36);
    ``dtype=torch.float16`` halves the images' 107 MB (3 channels). :func:`slice_transforms` returns float32.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {normalise!r}.")
    keys = list(modalities)
    steps: list = [
        LoadImaged([*keys, label_key], image_only=True, ensure_channel_first=True, allow_missing_keys=True),
        ConcatItemsd(keys, image_key),
        DeleteItemsd([k for k in keys if k != image_key]),
        WholeTumourd(label_key, allowed=allowed, dtype=label_dtype, allow_missing_keys=True),
    ]
    if normalise == "zscore":
        steps.append(NormalizeIntensityd(image_key, nonzero=True, channel_wise=True))
    steps.append(CastToTyped(image_key, dtype=dtype))
    steps.append(SliceMajord([image_key, label_key], allow_missing_keys=True))
    return Compose(steps)


def slice_transforms(normalise: str = "minmax", image_key: str = "image", label_key: str = "label") -> Compose:
    """Per-slice transforms: float32, then the seed's joint min-max for ``"minmax"`` (nothing more for z-scores)."""
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {normalise!r}.")
    steps: list = [EnsureTyped([image_key, label_key], dtype=torch.float32, allow_missing_keys=True)]
    if normalise == "minmax":
        steps.append(ScaleIntensityd(image_key, minv=0.0, maxv=1.0, channel_wise=False))
    return Compose(steps)
