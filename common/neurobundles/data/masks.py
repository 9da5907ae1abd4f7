"""A user's own binary segmentation task as a datalist: image volumes and their masks, for fine-tuning.

A task is given as

- a folder holding ``images/`` and ``masks/`` (or ``labels/``; the Medical Segmentation Decathlon's
  ``imagesTr/`` and ``labelsTr/`` too), a mask named like its image (any image format);
- a datalist file: MONAI's JSON (``{"training": [{"image": ..., "label": ...}, ...]}``, paths relative to the
  file, as the Decathlon's ``dataset.json``) or a plain JSON list of such items;
- for inference only, images without masks: files, folders of images, glob patterns.

Every image is one 3D volume (any contrast); a mask's non-zero voxels are the target.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from monai.data import load_decathlon_datalist

from neurobundles.errors import reported
from neurobundles.filenames import image_stem, is_image_file

from .folders import image_datalist, unique_ids

__all__ = ["IMAGE_FOLDERS", "MASK_FOLDERS", "mask_datalist"]

IMAGE_FOLDERS = ("images", "imagesTr")
MASK_FOLDERS = ("masks", "labels", "labelsTr")


def _task_folders(root: Path) -> tuple[Path, Path | None] | None:
    """(images folder, masks folder or None) of a task folder, or None when ``root`` is not one."""
    images = next((root / name for name in IMAGE_FOLDERS if (root / name).is_dir()), None)
    if images is None:
        return None
    masks = next((root / name for name in MASK_FOLDERS if (root / name).is_dir()), None)
    return images, masks


def _task_items(images: Path, masks: Path | None) -> list[dict[str, str]]:
    by_stem = {}
    if masks is not None:
        by_stem = {image_stem(p): p for p in sorted(masks.iterdir()) if is_image_file(p) and not p.name.startswith(".")}
    paths = [p for p in sorted(images.iterdir()) if is_image_file(p) and not p.name.startswith(".")]
    items = []
    for path, ident in zip(paths, unique_ids(paths)):
        item = {"id": ident, "image": str(path)}
        mask = by_stem.get(image_stem(path))
        if mask is not None:
            item["label"] = str(mask)
        items.append(item)
    return items


def _json_items(path: Path) -> list[dict[str, str]]:
    content = json.loads(path.read_text())
    if isinstance(content, list):
        items = [dict(item) for item in content]
        for item in items:
            for key in ("image", "label"):
                if key in item and not Path(str(item[key])).is_absolute():
                    item[key] = str((path.parent / str(item[key])).resolve())
    else:
        items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key="training")
    for item in items:
        if not isinstance(item.get("image"), (str, Path)):
            raise ValueError(
                f"{path}: item {item} needs one image file per case (a 3D volume); several channels per case are "
                "not supported by mask_datalist."
            )
    paths = [Path(str(item["image"])) for item in items]
    for item, ident in zip(items, unique_ids(paths)):
        item.setdefault("id", ident)
        item["image"] = str(item["image"])
        if "label" in item:
            item["label"] = str(item["label"])
    return items


@reported
def mask_datalist(
    inputs: str | Path | Sequence[str | Path],
    recursive: bool = False,
    exclude: Sequence[str | Path] = (),
    label: bool | None = None,
) -> list[dict[str, str]]:
    """``[{"id", "image", "label"}, ...]`` of a binary task (see the module docstring for what an input may be).

    Args:
        inputs: task folders, datalist files (``.json``), image files, folders of images, glob patterns.
        recursive: search folders of images recursively.
        exclude: folders whose files are never inputs (the output folder).
        label: True requires a mask for every image (training), False drops masks, None takes them where found.
    """
    entries = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not entries:
        raise ValueError("no input given: pass a task folder (images/ and masks/), a datalist .json, or images.")
    items: list[dict[str, str]] = []
    loose: list[str | Path] = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        task = _task_folders(path) if path.is_dir() else None
        if path.is_file() and path.suffix.lower() == ".json":
            items += _json_items(path)
        elif task is not None:
            items += _task_items(*task)
        else:
            loose.append(entry)
    if loose:
        items += image_datalist(loose, recursive=recursive, exclude=exclude)
    if not items:
        raise FileNotFoundError(f"no image found in {', '.join(map(str, entries))}.")
    if label is False:
        items = [{k: v for k, v in item.items() if k != "label"} for item in items]
    elif label is True:
        unlabelled = [item["image"] for item in items if "label" not in item]
        if unlabelled:
            more = f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""
            raise FileNotFoundError(
                f"{unlabelled[0]}: no mask for this image{more}; a task folder holds images/ and masks/ with a mask "
                'named like each image, or give a datalist .json with {"image": ..., "label": ...} items.'
            )
    idents = [item["id"] for item in items]
    repeated = sorted({i for i in idents if idents.count(i) > 1})
    if repeated:
        raise ValueError(f"case id(s) {', '.join(repeated)} occur more than once; rename the images.")
    return items
