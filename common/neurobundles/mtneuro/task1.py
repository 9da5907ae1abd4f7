"""MTNeuro Task 1 and Task 3 data from BossDB: the cutouts of a setting through ``intern`` and the cache, as tiles.

Every box of a setting (:meth:`Task1Config.boxes`) is fetched as two cutouts, the X-ray ``image`` and the region
annotation ``roi_labels`` (Task 3 adds ``pixel_labels``), with :class:`neurobundles.data.mtneuro.CutoutCache`: the
real ``intern`` client, retries with backoff, ``.npy`` files with a checksum record, offline reuse. Cache names are
the Task 2 ones (``<cache>/prasad/prasad2020/image_x4600-4856_y900-1156_z110-379_r0.npy``), so Task 1's cube set A
training cutouts are the files Task 2 already fetched.

**Items** (one per tile, or per tile quadrant with ``quadrants=True``), ready for MONAI datasets:
``{"image": uint8 [1, H, W], "label": region index, "id", "cube_set", "cube_region", "z", "y", "x", "roi_mode",
"nominal"}``; ``label`` is the mapped mode of the tile's ``roi_labels`` (:meth:`Task1Config.tile_label`, which also
decides the tiles outside the annotated slices), ``cube_region`` the region the cube was drawn from, ``z, y, x``
the image's first voxel in the dataset, ``roi_mode`` the raw mode and ``nominal`` whether the cube's region was used
because the slice carries no annotation. Quadrant items share their tile's label.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurobundles.data.mtneuro import SPLITS, Cutout, CutoutCache

from .features import semantic_features
from .regions import CutoutBox, Task1Config, load_task1_config, quadrants

__all__ = [
    "Task3Data",
    "box_cutouts",
    "label_report",
    "prefetch_task1",
    "resolve_config",
    "task1_datalist",
    "task1_images",
    "task3_data",
]

logger = logging.getLogger("neurobundles.mtneuro")

ConfigLike = Task1Config | str | os.PathLike | Mapping[str, Any] | None


def resolve_config(config: ConfigLike = None) -> Task1Config:
    """A :class:`Task1Config` from itself, a JSON path, a dictionary, or ``None`` (the shipped ``task1_rois.json``)."""
    if isinstance(config, Task1Config):
        return config
    if isinstance(config, Mapping):
        return Task1Config(dict(config))
    return load_task1_config(config)


def box_cutouts(config: Task1Config, box: CutoutBox, channel: str = "image") -> Cutout:
    """The BossDB cutout of ``box`` in one channel: "image", "roi_labels" (the annotation) or "pixel_labels"."""
    uris = {"image": config.image_chan, "roi_labels": config.annotation_chan, "pixel_labels": config.pixel_chan}
    if channel not in uris:
        raise ValueError(f"channel must be one of {sorted(uris)}, got {channel!r}.")
    return Cutout(uris[channel], box.x, box.y, box.z, config.resolution)


def prefetch_task1(
    cache_dir: str | os.PathLike | None = None,
    settings: Iterable[str] | None = None,
    splits: Iterable[str] = SPLITS,
    config: ConfigLike = None,
    task3: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[Path]:
    """Download (or check) every cutout of the given settings (default: all) into ``cache_dir``.

    Args:
        cache_dir: cache folder (default ``$NEUROBUNDLES_HOME/mtneuro``).
        settings: ROI settings to fetch; ``None`` for every setting of the config.
        splits: splits to fetch.
        config: task config (default the shipped one).
        task3: also fetch the images and ``pixel_labels`` of the Task 3 cubes.
        retries, backoff: per-request retries and the first wait in seconds (doubled each time).

    Returns:
        the ``.npy`` paths, in fetch order, without repeats.
    """
    config = resolve_config(config)
    cache = CutoutCache(cache_dir, offline=False, retries=retries, backoff=backoff)
    wanted: list[Cutout] = []
    for setting in settings if settings is not None else config.settings:
        for split in splits:
            for box in config.boxes(setting, split):
                wanted += [box_cutouts(config, box, "image"), box_cutouts(config, box, "roi_labels")]
    if task3:
        for box in config.task3_boxes():
            wanted += [box_cutouts(config, box, "image"), box_cutouts(config, box, "pixel_labels")]
    paths: list[Path] = []
    for cutout in dict.fromkeys(wanted):  # boxes shared by settings are fetched once
        cache.load(cutout)
        paths.append(cache.path(cutout))
    return paths


def task1_datalist(
    setting: str,
    split: str,
    config: ConfigLike = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    quadrant_images: bool = False,
    retries: int = 5,
    backoff: float = 1.0,
    verify: bool = True,
) -> list[dict[str, Any]]:
    """The tiles of one split of one ROI setting as MONAI items (see the module docstring).

    Cutouts missing from the cache are downloaded unless ``offline``.

    Args:
        setting: "ROI-C1", "ROI-C2" or "ROI-C3" (or another setting of the config).
        split: "train", "val" or "test".
        config: task config (default the shipped one).
        cache_dir: cache folder.
        offline: read only the cache (a missing cutout raises with the way to pre-fetch it).
        quadrant_images: four items per tile, its corners (top-left, top-right, bottom-left, bottom-right), as the
            reference evaluates self-supervised encoders trained on half-size crops.
        retries, backoff: download retries and first wait.
        verify: check each cached file's SHA-256 when opening it.
    """
    config = resolve_config(config)
    cache = CutoutCache(cache_dir, offline=offline, retries=retries, backoff=backoff, verify=verify)
    items = []
    for box in config.boxes(setting, split):
        image = cache.load(box_cutouts(config, box, "image"))
        roi = cache.load(box_cutouts(config, box, "roi_labels"))
        for tile in box.tiles(config.tile_size):
            label, mode, nominal = config.tile_label(tile, roi)
            pixels = np.array(tile.cut(image), dtype=np.uint8)[None]  # a copy: the cache is a read-only memory map
            z, y, x = tile.origin
            base = {"label": label, "cube_set": box.cube_set, "cube_region": box.region, "roi_mode": mode,
                    "nominal": nominal}  # fmt: skip
            name = f"{box.cube_set}_{box.region}_z{z}_y{y}_x{x}"
            if not quadrant_images:
                items.append({"image": pixels, "id": name, "z": z, "y": y, "x": x, **base})
                continue
            h, w = pixels.shape[-2] // 2, pixels.shape[-1] // 2
            for q, part in enumerate(quadrants(pixels)):
                dy, dx = (q // 2) * h, (q % 2) * w
                items.append({"image": np.ascontiguousarray(part), "id": f"{name}_q{q}", "z": z, "y": y + dy,
                              "x": x + dx, **base})  # fmt: skip
    return items


def task1_images(items: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 1, H, W] uint8, labels [N] int64)`` of a datalist (for the PCA/NMF baselines)."""
    if not items:
        raise ValueError("the datalist is empty.")
    return np.stack([np.asarray(item["image"]) for item in items]), np.array([item["label"] for item in items])


def label_report(items: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> dict[str, Any]:
    """How the tiles of a datalist were labelled: tiles per region, tiles labelled by their cube (no annotation),
    and tiles whose annotation names another region than their cube's (per cube, ``{cube: {region: tiles}}``)."""
    tiles = [item for item in items if not str(item["id"]).endswith(("_q1", "_q2", "_q3"))]
    counts = Counter(regions[int(item["label"])] for item in tiles)
    disagree: dict[str, Counter] = {}
    for item in tiles:
        region = regions[int(item["label"])]
        if region != item["cube_region"]:
            cube = f"{item['cube_set']}_{item['cube_region']}"
            disagree.setdefault(cube, Counter())[region] += 1
    return {
        "tiles": len(tiles),
        "per_region": {name: counts.get(name, 0) for name in regions},
        "nominal": sum(bool(item["nominal"]) for item in tiles),
        "disagreements": {cube: dict(found) for cube, found in disagree.items()},
    }


@dataclass
class Task3Data:
    """The Task 3 images and their semantic features, one row per image (slice quadrant, or slice).

    Attributes:
        images: ``[M, 1, H, W]`` uint8 X-ray images.
        features: ``{feature: [M]}`` (:func:`neurobundles.mtneuro.features.semantic_features`).
        regions: ``[M]`` region index of each image's cube.
        slices: ``[M]`` z of each image (dataset coordinates), to group correlated neighbours.
        ids: ``[M]`` names ``<cube_set>_<region>_z<z>[_q<quadrant>]``.
    """

    images: np.ndarray
    features: dict[str, np.ndarray]
    regions: np.ndarray
    slices: np.ndarray
    ids: list[str]


def task3_data(
    config: ConfigLike = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    quadrant_images: bool = True,
    connectivity: str = "3d",
    retries: int = 5,
    backoff: float = 1.0,
) -> Task3Data:
    """Images and semantic features of the Task 3 cubes (cube set A, all 360 annotated slices by default).

    Features are computed per cube over its contiguous slices (cells are 6-connected in 3D, as the reference);
    images are the same quadrants (or slices) in the same order.
    """
    config = resolve_config(config)
    cache = CutoutCache(cache_dir, offline=offline, retries=retries, backoff=backoff)
    images, regions, slices, ids = [], [], [], []
    features: dict[str, list[np.ndarray]] = {}
    for box in config.task3_boxes():
        if box.shape[1:] != config.tile_size:
            raise ValueError(
                f"Task 3 cube {box.name} is {box.shape[1]}×{box.shape[2]}, not one {config.tile_size} tile per slice; "
                "the features are computed per slice."
            )
        image = np.asarray(cache.load(box_cutouts(config, box, "image")), dtype=np.uint8)
        labels = np.asarray(cache.load(box_cutouts(config, box, "pixel_labels")))
        for name, values in semantic_features(labels, quadrant_images, connectivity).items():
            features.setdefault(name, []).append(values)
        region = config.regions.index(box.region)
        for k in range(box.shape[0]):
            z = box.z[0] + k
            parts = quadrants(image[k]) if quadrant_images else [image[k]]
            for q, part in enumerate(parts):
                images.append(np.ascontiguousarray(part)[None])
                regions.append(region)
                slices.append(z)
                ids.append(f"{box.cube_set}_{box.region}_z{z}" + (f"_q{q}" if quadrant_images else ""))
    return Task3Data(
        images=np.stack(images),
        features={name: np.concatenate(parts) for name, parts in features.items()},
        regions=np.asarray(regions, dtype=np.int64),
        slices=np.asarray(slices, dtype=np.int64),
        ids=ids,
    )
