"""Cut a microscopy cutout into the square tiles an image-level classifier was trained on.

A cutout arrives from ``neurobundles.data.LoadCutoutd`` as ``[1, Y, X, Z]`` (channel first, slices last). Each slice
is cut into non-overlapping ``tile_size`` tiles, slice by slice, then row by row, then column by column; the tiles
become the channels of one item ``[N, th, tw]``, so per-item transforms (resizing, normalisation) and a cohort
engine still see one input, and ``neurobundles.inferers.tiles.TileClassifierInferer`` classifies them in batches.
A bottom or right remainder narrower than a tile is not classified (logged); a slice smaller than one tile is an
error, since the classifier takes whole tiles at the resolution it was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from neurobundles.errors import InvalidImageError

__all__ = ["TileCutout", "TileCutoutd", "tile_origins"]

logger = logging.getLogger("neurobundles.cutouts")


def tile_origins(shape: Sequence[int], tile_size: Sequence[int]) -> np.ndarray:
    """``[N, 3]`` (z, y, x) first voxels of the whole tiles of a ``[Y, X, Z]`` cutout, in classification order."""
    ny, nx, nz = (int(s) for s in shape)
    th, tw = (int(s) for s in tile_size)
    grid = [(z, y, x) for z in range(nz) for y in range(0, ny - th + 1, th) for x in range(0, nx - tw + 1, tw)]
    return np.asarray(grid, dtype=np.int64).reshape(-1, 3)


class TileCutout(Transform):
    """``[1, Y, X, Z]`` cutout → ``([N, th, tw] tiles, [N, 3] (z, y, x) corners)``.

    Args:
        tile_size: ``(height, width)`` of a tile in pixels (MTNeuro: 256²).
    """

    def __init__(self, tile_size: Sequence[int] = (256, 256)) -> None:
        self.tile_size = tuple(int(s) for s in tile_size)
        if len(self.tile_size) != 2 or min(self.tile_size) < 1:
            raise ValueError(f"tile_size must be two positive integers, got {tile_size!r}.")

    def __call__(self, cutout: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        volume = torch.as_tensor(cutout)
        if volume.ndim != 4 or volume.shape[0] != 1:
            raise ValueError(f"a cutout is [1, Y, X, Z], got shape {tuple(volume.shape)}.")
        (th, tw), (_, ny, nx, _) = self.tile_size, volume.shape
        if ny < th or nx < tw:
            raise InvalidImageError(
                f"slices of {ny}×{nx} pixels are smaller than one {th}×{tw} tile: the classifier takes whole {th}×{tw} "
                "tiles at the resolution it was trained on (pad or crop the cutout, or change tile_size)."
            )
        if ny % th or nx % tw:
            logger.info("%d row(s) and %d column(s) at the bottom and right of each slice do not fill a tile and are "
                        "not classified", ny % th, nx % tw)  # fmt: skip
        origins = tile_origins(volume.shape[1:], self.tile_size)
        plane = volume.as_tensor() if hasattr(volume, "as_tensor") else volume
        tiles = torch.stack([plane[0, y : y + th, x : x + tw, z] for z, y, x in origins.tolist()])
        return tiles, origins


class TileCutoutd(MapTransform):
    """Dictionary twin of :class:`TileCutout`: ``key`` becomes the tile stack ``[N, th, tw]``, ``<key>_tiles`` the
    ``[N, 3]`` (z, y, x) corners and ``<key>_source`` the cutout's file (from its meta data, when it has some).

    Args:
        keys: keys holding ``[1, Y, X, Z]`` cutouts.
        tile_size: ``(height, width)`` of a tile.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection, tile_size: Sequence[int] = (256, 256), allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.tiler = TileCutout(tile_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = getattr(d[key], "meta", {}).get("filename_or_obj")
            if source is not None:
                d[f"{key}_source"] = str(source)
            d[key], d[f"{key}_tiles"] = self.tiler(d[key])
        return d
