"""Label maps in Analyze 7.5 (``.hdr``/``.img``), the format challenges such as iSeg-2017 take submissions in."""

from __future__ import annotations

import io
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.atomic import atomic_save, ensure_writable_dir
from neurobundles.filenames import image_stem

from .label_maps import smallest_label_dtype

__all__ = ["SaveAnalyzeLabelsd", "analyze_bytes"]

logger = logging.getLogger(__name__)


def analyze_bytes(labels: np.ndarray, reference: nib.spatialimages.SpatialImage) -> tuple[bytes, bytes]:
    """``(header, image)`` bytes of ``labels`` as an Analyze 7.5 pair on ``reference``'s grid.

    The reference's Analyze header is kept (voxel sizes, origin; nibabel reads plain Analyze files as SPM's
    variant) when it is one; its shape is kept too, with the trailing axis of 1 that iSeg-2017's files carry.
    Labels are written as the smallest unsigned integer.
    """
    spatial = tuple(int(s) for s in reference.shape[:3])
    if tuple(labels.shape) != spatial:
        raise ValueError(f"label map shape {labels.shape} differs from the reference's {spatial}.")
    data = labels.astype(smallest_label_dtype(labels))
    if len(reference.shape) > 3 and int(np.prod(reference.shape[3:])) == 1:
        data = data.reshape(reference.shape)
    if isinstance(reference, nib.AnalyzeImage) and not isinstance(reference, nib.Nifti1Pair):
        image = type(reference)(data, None, reference.header.copy())  # Analyze (or SPM's variant) as read
    else:
        image = nib.AnalyzeImage(data, reference.affine)
    image.header.set_data_dtype(data.dtype)
    if image.header.has_data_slope:
        image.header.set_slope_inter(1.0)
    streams = {"header": io.BytesIO(), "image": io.BytesIO()}
    image.to_file_map({kind: nib.FileHolder(fileobj=stream) for kind, stream in streams.items()})
    return streams["header"].getvalue(), streams["image"].getvalue()


class SaveAnalyzeLabelsd(MapTransform):
    """Write each label map as an Analyze pair ``<id><postfix>.hdr/.img`` in ``output_dir``, values mapped.

    For challenge submissions (iSeg-2017: ``subject-11-label.img`` with values 0/10/150/250): the label map
    must be in the input's grid (its source file, ``filename_or_obj``, is the reference); ``values[c]`` is
    written for class ``c``. Both files are written atomically, the ``.img`` first; if either fails, neither
    is left. Place it before :class:`~neurobundles.outputs.SaveSegmentationd`, whose summary marks the
    subject complete.

    Args:
        keys: class-index label map key.
        output_dir: folder for the pair (created).
        values: the value written for each class index (default: the class indices themselves).
        postfix: appended to the id (iSeg-2017 names label maps ``subject-N-label``).
        id_key: data key naming the subject (default: the source file's stem).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        values: Sequence[int] | None = None,
        postfix: str = "-label",
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.values = None if values is None else np.asarray(list(values), dtype=np.int64)
        self.postfix, self.id_key = postfix, id_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            prediction = d[key]
            source = str(prediction.meta["filename_or_obj"])
            classes = np.asarray(prediction.detach().cpu())[0].astype(np.int64)
            if self.values is not None:
                if classes.min(initial=0) < 0 or classes.max(initial=0) >= len(self.values):
                    raise ValueError(
                        f"{source}: class indices {classes.min()}–{classes.max()} outside the {len(self.values)} "
                        "values to write."
                    )
                classes = self.values[classes]
            header, image = analyze_bytes(classes, nib.load(source))
            ident = str(d.get(self.id_key) or image_stem(source))
            ensure_writable_dir(self.output_dir)
            target = self.output_dir / f"{ident}{self.postfix}.img"
            written = []
            try:
                for path, content in ((target, image), (target.with_suffix(".hdr"), header)):
                    atomic_save(path, lambda tmp, content=content: Path(tmp).write_bytes(content))
                    written.append(path)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            logger.info("%s → %s (Analyze)", source, target)
        return d
