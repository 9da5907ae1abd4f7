"""MTNeuro Task 1: brain-region labels of X-ray tiles, and the cutout boxes of the ROI-C1/C2/C3 settings.

A tile's label is the most frequent value of the ``roi_labels`` channel inside it, mapped to one of four regions:
{0, 1} → CTX, {2, 8} → STR, {3, 4} → VP, {5, 6, 7} → ZI (the MTNeuro reference dataloader's rule). Ties between
raw labels go to the smallest raw label: that is what ``torch.mode`` returns on the CPU, where the reference
dataloader computed it, and it is deterministic.

The cube sets (A: the densely annotated cubes; B, C, D: the extra cubes of the paper's appendix) and the three
settings live in a task config JSON (``task1_rois.json`` beside this module); :class:`Task1Config` turns a setting
and a split into the cutout boxes to fetch and the 256² tiles cut from each box.

Slices without a region annotation. The interpolated ``roi_labels`` exist for z 109–459 only (``roi_annotated_z``,
paper appendix 1.3), but the extra cubes span z 110–469 and cube set A's test slices reach 469: there every voxel
is 0, whose mode maps to CTX whatever the cube. ``unannotated_tiles: "nominal"`` (the default) labels such tiles
with their cube's region; ``"mode"`` keeps the literal rule (10 slices per non-cortex cube then carry CTX).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = [
    "DEFAULT_TASK1_CONFIG",
    "REGIONS",
    "ROI_LABEL_GROUPS",
    "UNANNOTATED_POLICIES",
    "CutoutBox",
    "Task1Config",
    "Tile",
    "TileRegion",
    "TileRegiond",
    "load_task1_config",
    "quadrants",
    "roi_label_lut",
    "roi_mode",
    "tile_region",
    "tile_regions",
]

REGIONS: tuple[str, ...] = ("CTX", "STR", "VP", "ZI")
ROI_LABEL_GROUPS: dict[str, tuple[int, ...]] = {"CTX": (0, 1), "STR": (2, 8), "VP": (3, 4), "ZI": (5, 6, 7)}
DEFAULT_TASK1_CONFIG = Path(__file__).with_name("task1_rois.json")
SPLITS = ("train", "val", "test")
UNANNOTATED_POLICIES = ("nominal", "mode")


def roi_label_lut(
    groups: Mapping[str, Sequence[int]] = ROI_LABEL_GROUPS, regions: Sequence[str] = REGIONS
) -> np.ndarray:
    """Lookup table raw ``roi_labels`` value → region index (-1 where a value belongs to no region)."""
    unknown = set(groups) - set(regions)
    if unknown:
        raise ValueError(f"roi_label_groups name regions {sorted(unknown)} that are not in regions {list(regions)}.")
    values = [int(v) for members in groups.values() for v in members]
    if len(values) != len(set(values)) or min(values, default=0) < 0:
        raise ValueError(f"roi_label_groups must give each non-negative raw label to one region, got {dict(groups)}.")
    lut = np.full(max(values, default=0) + 1, -1, dtype=np.int64)
    for name, members in groups.items():
        lut[list(members)] = regions.index(name)
    return lut


def _counts(tile: np.ndarray | torch.Tensor) -> np.ndarray:
    values = np.asarray(tile.detach().cpu() if isinstance(tile, torch.Tensor) else tile).ravel()
    if values.size == 0:
        raise ValueError("roi_labels tile is empty; a tile needs at least one voxel.")
    if values.dtype.kind not in "iub":
        raise ValueError(f"roi_labels must be integers, got dtype {values.dtype}.")
    if values.dtype.kind == "i" and values.min() < 0:
        raise ValueError(f"roi_labels must be non-negative, got {values.min()}.")
    return np.bincount(values.astype(np.int64, copy=False))


def roi_mode(tile: np.ndarray | torch.Tensor) -> int:
    """Most frequent raw label of a ``roi_labels`` tile; ties go to the smallest label (as ``torch.mode`` on CPU)."""
    return int(np.argmax(_counts(tile)))  # argmax returns the first, i.e. smallest, of tied labels


def tile_region(
    tile: np.ndarray | torch.Tensor,
    groups: Mapping[str, Sequence[int]] = ROI_LABEL_GROUPS,
    regions: Sequence[str] = REGIONS,
) -> int:
    """Region index (position in ``regions``) of one ``roi_labels`` tile: the mode, then the group it belongs to."""
    lut = roi_label_lut(groups, regions)
    mode = roi_mode(tile)
    index = int(lut[mode]) if mode < len(lut) else -1
    if index < 0:
        raise ValueError(
            f"roi_labels tile has mode {mode}, which no region claims (groups {dict(groups)}); "
            "add it to roi_label_groups in the task config or check that the annotation channel is roi_labels."
        )
    return index


def tile_regions(
    tiles: np.ndarray | torch.Tensor,
    groups: Mapping[str, Sequence[int]] = ROI_LABEL_GROUPS,
    regions: Sequence[str] = REGIONS,
) -> np.ndarray:
    """Region indices of a stack of tiles ``[N, ...]`` (one per leading index), as int64."""
    return np.array([tile_region(t, groups, regions) for t in tiles], dtype=np.int64)


def quadrants(image: np.ndarray | torch.Tensor) -> list[np.ndarray | torch.Tensor]:
    """The four corners (half height, half width) of the last two axes: top-left, top-right, bottom-left,
    bottom-right, the order of the MTNeuro reference (its Task 1 evaluation and Task 3 features use them).
    """
    height, width = image.shape[-2], image.shape[-1]
    if height % 2 or width % 2:
        raise ValueError(f"quadrants need even image sides, got {height}×{width}.")
    h, w = height // 2, width // 2
    return [image[..., :h, :w], image[..., :h, w:], image[..., h:, :w], image[..., h:, w:]]


class TileRegion(Transform):
    """``roi_labels`` tile (``[H, W]`` or ``[1, H, W]``) → region index as a 0-d int64 tensor.

    Args:
        groups: raw labels of each region; default the MTNeuro mapping.
        regions: region names in class-index order.
    """

    def __init__(self, groups: Mapping[str, Sequence[int]] | None = None, regions: Sequence[str] | None = None) -> None:
        self.regions = tuple(regions or REGIONS)
        self.groups = {k: tuple(v) for k, v in (groups or ROI_LABEL_GROUPS).items()}
        roi_label_lut(self.groups, self.regions)  # validate once

    def __call__(self, tile: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(tile_region(tile, self.groups, self.regions), dtype=torch.long)


class TileRegiond(MapTransform):
    """Dictionary twin of :class:`TileRegion`: replaces each key's ``roi_labels`` tile by its region index.

    Args:
        keys: keys holding ``roi_labels`` tiles.
        groups: raw labels of each region; default the MTNeuro mapping.
        regions: region names in class-index order.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        groups: Mapping[str, Sequence[int]] | None = None,
        regions: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = TileRegion(groups, regions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


@dataclass(frozen=True)
class CutoutBox:
    """One cube's cutout for one split: half-open voxel ranges at the task's resolution.

    ``region`` is the cube's nominal region (the region the paper drew it from); tile labels still come from
    ``roi_labels`` (:func:`tile_region`), so a tile whose mode disagrees with ``region`` is a fact about the
    annotation to look at, not an error.
    """

    cube_set: str
    region: str
    split_range: str
    z: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Cutout shape ``(z, y, x)``, the order intern's arrays return."""
        return (self.z[1] - self.z[0], self.y[1] - self.y[0], self.x[1] - self.x[0])

    @property
    def index(self) -> tuple[slice, slice, slice]:
        """``array[box.index]`` pulls this box from an ``intern.array`` (or any ``[z, y, x]`` volume)."""
        return (slice(*self.z), slice(*self.y), slice(*self.x))

    @property
    def name(self) -> str:
        """A file-name-safe identifier, unique per box (separators between every number)."""
        return (
            f"{self.cube_set}_{self.region}_z{self.z[0]}-{self.z[1]}_y{self.y[0]}-{self.y[1]}_x{self.x[0]}-{self.x[1]}"
        )

    def tiles(self, tile_size: Sequence[int] = (256, 256)) -> list[Tile]:
        """Non-overlapping ``tile_size`` (y, x) tiles of every slice, slice-major, then rows, then columns."""
        th, tw = (int(s) for s in tile_size)
        nz, ny, nx = self.shape
        if ny % th or nx % tw:
            raise ValueError(
                f"box {self.name} is {ny}×{nx} (y×x), not a whole number of {th}×{tw} tiles; "
                "fix the ranges or tile_size in the task config."
            )
        return [Tile(self, z, y, x, (th, tw)) for z in range(nz) for y in range(0, ny, th) for x in range(0, nx, tw)]


@dataclass(frozen=True)
class Tile:
    """One 2D tile inside a :class:`CutoutBox`: slice ``z`` and top-left corner ``(y, x)`` relative to the box."""

    box: CutoutBox
    z: int
    y: int
    x: int
    size: tuple[int, int]

    @property
    def origin(self) -> tuple[int, int, int]:
        """Top-left voxel of the tile in dataset coordinates ``(z, y, x)``."""
        return (self.box.z[0] + self.z, self.box.y[0] + self.y, self.box.x[0] + self.x)

    def cut(self, cutout: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """This tile (``[..., H, W]``) from the box's cutout ``[..., z, y, x]``."""
        if tuple(cutout.shape[-3:]) != self.box.shape:
            raise ValueError(f"cutout has shape {tuple(cutout.shape)}, box {self.box.name} needs {self.box.shape}.")
        return cutout[..., self.z, self.y : self.y + self.size[0], self.x : self.x + self.size[1]]


def _range(value: Any, what: str) -> tuple[int, int]:
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise ValueError(f"{what} must be [start, stop] integers, got {value!r}.")
    start, stop = int(value[0]), int(value[1])
    if not 0 <= start < stop:
        raise ValueError(f"{what} must satisfy 0 <= start < stop, got {[start, stop]}.")
    return start, stop


@dataclass(frozen=True)
class Task1Config:
    """A Task 1 task config (see ``task1_rois.json``): cube sets, z ranges and settings.

    Use :meth:`boxes` for the cutouts to fetch and :meth:`tiles` for the tiles cut from them.
    """

    raw: Mapping[str, Any]
    source: str = "<dict>"

    def __post_init__(self) -> None:
        for key in ("regions", "roi_label_groups", "z_ranges", "cube_sets", "settings", "tile_size"):
            if key not in self.raw:
                raise ValueError(
                    f"{self.source}: task config lacks {key!r}; see {DEFAULT_TASK1_CONFIG} for the layout."
                )
        roi_label_lut(self.roi_label_groups, self.regions)
        if self.unannotated_tiles not in UNANNOTATED_POLICIES:
            raise ValueError(
                f"{self.source}: unannotated_tiles must be one of {UNANNOTATED_POLICIES}, "
                f"got {self.unannotated_tiles!r}."
            )
        _ = self.roi_annotated_z  # validates the range
        for name in self.settings:
            for split in SPLITS:
                self.boxes(name, split)  # validates every reference, range and tile grid up front
        self.task3_boxes()

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.raw["regions"])

    @property
    def image_chan(self) -> str:
        """BossDB URI of the X-ray images."""
        return str(self.raw.get("image_chan", "bossdb://prasad/prasad2020/image"))

    @property
    def annotation_chan(self) -> str:
        """BossDB URI of the region annotation (``roi_labels``)."""
        return str(self.raw.get("annotation_chan", "bossdb://prasad/prasad_analysis/roi_labels"))

    @property
    def pixel_chan(self) -> str:
        """BossDB URI of the microstructure annotation (``pixel_labels``, Task 3 features)."""
        return str(self.raw.get("pixel_chan", "bossdb://prasad/prasad_analysis/pixel_labels"))

    @property
    def resolution(self) -> int:
        return int(self.raw.get("resolution", 0))

    @property
    def roi_annotated_z(self) -> tuple[int, int] | None:
        """Slices ``[start, stop)`` that carry a region annotation (None: all)."""
        value = self.raw.get("roi_annotated_z")
        return None if value is None else _range(value, f"{self.source}: roi_annotated_z")

    @property
    def unannotated_tiles(self) -> str:
        """How tiles outside :attr:`roi_annotated_z` are labelled: "nominal" (their cube's region) or "mode"."""
        return str(self.raw.get("unannotated_tiles", "nominal"))

    def is_annotated(self, z: int) -> bool:
        """Whether slice ``z`` (dataset coordinates) lies where ``roi_labels`` were drawn."""
        span = self.roi_annotated_z
        return span is None or span[0] <= z < span[1]

    def tile_label(self, tile: Tile, roi_cutout: np.ndarray | torch.Tensor) -> tuple[int, int, bool]:
        """``(region index, raw mode, nominal)`` of a tile from its box's ``roi_labels`` cutout.

        ``nominal`` is True when the tile lies outside :attr:`roi_annotated_z` and the policy gave it its cube's
        region instead of the mode's.
        """
        raw = tile.cut(roi_cutout)
        mode = roi_mode(raw)
        if self.unannotated_tiles == "nominal" and not self.is_annotated(tile.origin[0]):
            return self.regions.index(tile.box.region), mode, True
        return tile_region(raw, self.roi_label_groups, self.regions), mode, False

    def evaluations(self, setting: str) -> tuple[str, ...]:
        """Settings a model trained for ``setting`` is tested in: those with the same training cubes (a model
        trained for ROI-C1 is tested in ROI-C1 and ROI-C2)."""
        train = self.raw["settings"][setting].get("train", []) if setting in self.settings else None
        if train is None:
            raise ValueError(f"{self.source}: no setting {setting!r}; settings are {list(self.settings)}.")
        return tuple(s for s in self.settings if self.raw["settings"][s].get("train", []) == train)

    def task3_boxes(self) -> list[CutoutBox]:
        """The densely annotated cubes whose slices Task 3 describes (``task3``: cube set and z range)."""
        spec = self.raw.get("task3", {"cube_set": "A", "z_range": "all"})
        return self._boxes_of(str(spec["cube_set"]), str(spec["z_range"]), "task3")

    @property
    def roi_label_groups(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(v) for v in vs) for k, vs in self.raw["roi_label_groups"].items()}

    @property
    def tile_size(self) -> tuple[int, int]:
        th, tw = self.raw["tile_size"]
        return int(th), int(tw)

    @property
    def settings(self) -> tuple[str, ...]:
        return tuple(self.raw["settings"])

    @property
    def downsample(self) -> int:
        """Factor the tiles are shrunk by before the network (paper: 2, i.e. 256² tiles seen as 128²)."""
        return int(self.raw.get("downsample", 1))

    @property
    def eval_quadrants(self) -> bool:
        """Whether test images are the four quadrants of each tile, each with the tile's label (the reference's
        SSL evaluation, matching its half-size training crops)."""
        return bool(self.raw.get("eval_quadrants", False))

    def boxes(self, setting: str, split: str) -> list[CutoutBox]:
        """Cutout boxes of ``split`` ("train", "val", "test") in ``setting`` ("ROI-C1", "ROI-C2", "ROI-C3"),
        cube set by cube set in the config's order, regions in ``regions`` order.
        """
        if setting not in self.raw["settings"]:
            raise ValueError(f"{self.source}: no setting {setting!r}; settings are {list(self.settings)}.")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        entries = self.raw["settings"][setting].get(split, [])
        boxes = []
        for entry in entries:
            if not (isinstance(entry, Sequence) and len(entry) == 2):
                raise ValueError(f"{self.source}: {setting}/{split} entries are [cube_set, z_range], got {entry!r}.")
            boxes += self._boxes_of(entry[0], entry[1], f"{setting}/{split}")
        return boxes

    def _boxes_of(self, cube_set: str, z_name: str, where: str) -> list[CutoutBox]:
        """The boxes of one cube set over one named z range, regions in ``regions`` order."""
        if cube_set not in self.raw["cube_sets"]:
            raise ValueError(
                f"{self.source}: {where} names cube set {cube_set!r}; cube sets are {list(self.raw['cube_sets'])}."
            )
        if z_name not in self.raw["z_ranges"]:
            raise ValueError(
                f"{self.source}: {where} names z range {z_name!r}; z ranges are {list(self.raw['z_ranges'])}."
            )
        z = _range(self.raw["z_ranges"][z_name], f"{self.source}: z_ranges.{z_name}")
        cubes = self.raw["cube_sets"][cube_set]
        boxes = []
        for region in self.regions:
            if region not in cubes:
                raise ValueError(f"{self.source}: cube set {cube_set!r} has no {region} cube.")
            at = f"{self.source}: cube_sets.{cube_set}.{region}"
            box = CutoutBox(
                cube_set,
                region,
                z_name,
                z,
                _range(cubes[region].get("y"), f"{at}.y"),
                _range(cubes[region].get("x"), f"{at}.x"),
            )
            box.tiles(self.tile_size)  # checks the tile grid
            boxes.append(box)
        return boxes

    def tiles(self, setting: str, split: str) -> list[Tile]:
        """Every tile of ``split`` in ``setting``, box by box (see :meth:`CutoutBox.tiles` for the order)."""
        return [tile for box in self.boxes(setting, split) for tile in box.tiles(self.tile_size)]


def load_task1_config(path: str | Path | None = None) -> Task1Config:
    """Read a Task 1 task config; default the shipped ``task1_rois.json`` (the paper's cube sets and settings)."""
    path = Path(path) if path is not None else DEFAULT_TASK1_CONFIG
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: Task 1 config not found; pass the path of a task config JSON.") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    return Task1Config(raw, str(path))
