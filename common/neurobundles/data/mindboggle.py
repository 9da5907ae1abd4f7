"""Mindboggle-101: ``<root>/<group>_volumes/<subject>/t1weighted.nii.gz`` with ``labels.DKT31.manual+aseg.nii.gz``.

The groups are the cohorts the 101 brains come from (``OASIS-TRT-20``, ``NKI-RS-22``, ``NKI-TRT-20``, ``HLN-12``,
``MMRR-21``, ``Afterthought-1``, ``Colin27-1``, ``Twins-2``...). Labels are FreeSurfer ids: manual DKT31 cortical
regions (1002–2035) and FreeSurfer's ``aseg`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neurobundles.errors import reported

from .freesurfer import with_label

__all__ = ["GROUP_SUFFIX", "MINDBOGGLE_IMAGE", "MINDBOGGLE_LABEL", "mindboggle_datalist"]

MINDBOGGLE_IMAGE = "t1weighted.nii.gz"
MINDBOGGLE_LABEL = "labels.DKT31.manual+aseg.nii.gz"
GROUP_SUFFIX = "_volumes"


def _group_folders(root: Path) -> dict[str, Path]:
    """Group name → folder; ``root`` holds ``<group>_volumes`` folders or is one of them.

    The dataset's own top folder is called ``Mindboggle101_volumes``, so the suffix alone cannot tell a group.
    """
    groups = {
        p.name[: -len(GROUP_SUFFIX)]: p for p in sorted(root.iterdir()) if p.is_dir() and p.name.endswith(GROUP_SUFFIX)
    }
    if not groups and root.name.endswith(GROUP_SUFFIX):
        return {root.name[: -len(GROUP_SUFFIX)]: root}
    return groups


@reported
def mindboggle_datalist(
    root: str | Path,
    groups: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    image: str = MINDBOGGLE_IMAGE,
    label: str | None = MINDBOGGLE_LABEL,
) -> list[dict[str, str]]:
    """One item per subject, ``{"image", "label", "id", "group"}``, sorted by group and subject.

    Every image/label pair is checked from the headers (same shape and affine), so a bad subject
    fails here, naming its files, rather than hours into training.

    Args:
        root: ``Mindboggle101_volumes`` (the folder of ``<group>_volumes``) or one ``<group>_volumes`` folder.
        groups: group names to take (``["OASIS-TRT-20"]``); default all.
        subjects: subject folder names to take; default all subjects of the chosen groups.
        image: image file name in each subject folder.
        label: label file name in each subject folder; None for images only.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: Mindboggle-101 folder not found.")
    found = _group_folders(root)
    if not found:
        raise FileNotFoundError(
            f"{root}: no <group>{GROUP_SUFFIX} folder (such as OASIS-TRT-20{GROUP_SUFFIX}); "
            "point at Mindboggle101_volumes or one of its group folders."
        )
    if groups is not None:
        unknown = sorted(set(groups) - set(found))
        if unknown:
            raise ValueError(f"{root}: no group {', '.join(unknown)}; available: {', '.join(found)}.")
        found = {name: found[name] for name in groups}
    folders = {p.name: (group, p) for group, folder in found.items() for p in sorted(folder.iterdir()) if p.is_dir()}
    if subjects is not None:
        unknown = sorted(set(subjects) - set(folders))
        if unknown:
            raise ValueError(f"{root}: no subject {', '.join(unknown)} in groups {', '.join(found)}.")
        folders = {name: folders[name] for name in subjects}
    items = []
    for name, (group, folder) in folders.items():
        image_path = folder / image
        if not image_path.is_file():
            raise FileNotFoundError(f"{image_path}: image missing for subject {name}.")
        item = {"image": str(image_path), "id": name, "group": group}
        items.append(item if label is None else with_label(item, folder / label, name))
    if not items:
        raise FileNotFoundError(f"{root}: the group folders hold no subject folder.")
    return items
