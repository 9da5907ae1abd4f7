"""FreeSurfer/HCP subjects folders: ``<root>/<subject>/mri/{orig,T1}.mgz`` with ``aparc+aseg.mgz``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from neurobundles.errors import reported

__all__ = ["check_pair", "freesurfer_datalist"]


def check_pair(image: Path, label: Path) -> None:
    """Refuse an image/label pair whose grids differ (headers only; no voxel data is read)."""
    image_header, label_header = nib.load(str(image)), nib.load(str(label))
    if image_header.shape[:3] != label_header.shape[:3]:
        raise ValueError(
            f"{label}: shape {label_header.shape[:3]} differs from {image} shape {image_header.shape[:3]}."
        )
    if not np.allclose(image_header.affine, label_header.affine, atol=1e-3):
        raise ValueError(f"{label}: affine differs from {image}'s; the label map is not in the image's space.")


def with_label(item: dict[str, str], label: Path, subject: str) -> dict[str, str]:
    """``item`` plus its ``label`` path, once the file exists and lies on the image's grid."""
    if not label.is_file():
        raise FileNotFoundError(f"{label}: label map missing for subject {subject}.")
    check_pair(Path(item["image"]), label)
    return {**item, "label": str(label)}


@reported
def freesurfer_datalist(
    root: str | Path,
    image: str | Sequence[str] = ("orig.mgz", "T1.mgz"),
    label: str | None = "aparc+aseg.mgz",
    subjects: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """One item per subject: ``{"image", "label", "id"}`` (``label`` omitted when ``label`` is None).

    Args:
        root: the subjects folder (FreeSurfer's ``$SUBJECTS_DIR``).
        image: file name(s) in ``<subject>/mri`` to use as the image; the first that exists wins.
        label: label file name in ``<subject>/mri``.
        subjects: subject names to take; default every folder holding ``mri/<image>``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: FreeSurfer subjects folder not found.")
    candidates = [image] if isinstance(image, str) else list(image)
    names = list(subjects) if subjects is not None else sorted(p.name for p in root.iterdir() if (p / "mri").is_dir())
    items = []
    for name in names:
        mri = root / name / "mri"
        found = next((mri / c for c in candidates if (mri / c).is_file()), None)
        if found is None:
            if subjects is None:
                continue
            raise FileNotFoundError(f"{mri}: none of {', '.join(candidates)} exists for subject {name}.")
        item = {"image": str(found), "id": name}
        items.append(item if label is None else with_label(item, mri / label, name))
    if not items:
        raise FileNotFoundError(f"{root}: no subject folder with mri/{' or mri/'.join(candidates)}.")
    return items
