"""MTNeuro Task 3: human-interpretable features of pixel-labelled X-ray images.

Per image, from the ``pixel_labels`` channel (0 background, 1 vessel, 2 cell, 3 axon):

- ``vessels``: fraction of pixels labelled 1 (0–1; the reference code reports percent, R² is the same);
- ``axons``: fraction of pixels labelled 3;
- ``cell_count``: number of cell components (label 2) present in the image;
- ``cell_size``: mean number of pixels of those components inside the image (0 when there is none);
- ``nn_distance``: mean distance, in pixels, from each component's centroid to its nearest neighbour's
  (a k-d tree, ``scipy.spatial.cKDTree``); :data:`NO_NEIGHBOUR_DISTANCE` (64, the reference's value, half a
  128-pixel quadrant) when the image has fewer than two cells.

Images are the four 128² quadrants of each 256² slice by default, as in the reference: the reference's Task 1
encoders are evaluated on those corners, and four images per slice give 5,760 samples over the 4 cubes × 360
slices, against 1,440 whole tiles for 512-dimensional embeddings (an in-sample R², as the paper reports, is
inflated when samples are few). ``quadrant_images=False`` uses whole slices.

Cells are connected components of label 2 found in 3D with 6-connectivity over the contiguous slice stack, as
the reference does (``cc3d``, connectivity 6), then counted per image: pixels of one 3D component count as one
cell in an image even where they form separate 2D pieces, and a component cut by a quadrant border counts in
both quadrants. ``connectivity="2d"`` labels each slice on its own with 4-connectivity (for images without
their neighbours in z). Pass one cube's slices at a time: stacking cubes would connect cells across cubes.

Two reference defects are not reproduced unless ``reference_quirks=True``: its nearest-neighbour mean averages the
``k=2`` query including each centroid's zero distance to itself (so it is half the mean nearest-neighbour
distance), and it leaves the cell size at 0 for an image with exactly one cell.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "FEATURES",
    "FEATURE_TITLES",
    "NO_NEIGHBOUR_DISTANCE",
    "PIXEL_LABELS",
    "cell_stats",
    "feature_matrix",
    "label_cells",
    "semantic_features",
]

PIXEL_LABELS: dict[str, int] = {"background": 0, "vessel": 1, "cell": 2, "axon": 3}
FEATURES: tuple[str, ...] = ("vessels", "axons", "cell_count", "cell_size", "nn_distance")
FEATURE_TITLES: dict[str, str] = {
    "vessels": "Vessels",
    "axons": "Axons",
    "cell_count": "Cell Count",
    "cell_size": "Cell Size",
    "nn_distance": "Dist (k=1)",
}
NO_NEIGHBOUR_DISTANCE = 64.0


def _as_stack(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    array = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"pixel labels must be [H, W] or a slice stack [N, H, W], got shape {array.shape}.")
    if array.dtype.kind not in "iub":
        raise ValueError(f"pixel labels must be integers, got dtype {array.dtype}.")
    return array


def label_cells(labels: np.ndarray | torch.Tensor, connectivity: str = "3d", cell_label: int = 2) -> np.ndarray:
    """Connected components of ``cell_label`` in a slice stack ``[N, H, W]`` (ids 1..K, 0 elsewhere).

    Args:
        labels: pixel labels, one cube's consecutive slices.
        connectivity: "3d" (6-connected through the stack, the reference) or "2d" (4-connected within each slice).
        cell_label: the value that marks cells.
    """
    stack = _as_stack(labels)
    if connectivity == "3d":
        structure = ndimage.generate_binary_structure(3, 1)
    elif connectivity == "2d":
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
    else:
        raise ValueError(f"connectivity must be '3d' or '2d', got {connectivity!r}.")
    components, _ = ndimage.label(stack == cell_label, structure=structure)
    return components


def cell_stats(
    components: np.ndarray,
    no_neighbour_distance: float = NO_NEIGHBOUR_DISTANCE,
    reference_quirks: bool = False,
) -> tuple[int, float, float]:
    """``(count, mean size, mean nearest-neighbour distance)`` of the components present in one 2D image.

    Args:
        components: component ids of one image ``[H, W]`` (0 = no cell); pixels sharing an id are one cell.
        no_neighbour_distance: distance reported when fewer than two cells are present.
        reference_quirks: reproduce the reference's halved distance and zero size for a single cell.
    """
    rows, cols = np.nonzero(components)
    if rows.size == 0:
        return 0, 0.0, float(no_neighbour_distance)
    ids = components[rows, cols]
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    count = len(counts)
    size = float(counts.mean())
    if count < 2:
        return count, 0.0 if reference_quirks else size, float(no_neighbour_distance)
    centroids = np.column_stack(
        [np.bincount(inverse, weights=rows) / counts, np.bincount(inverse, weights=cols) / counts]
    )
    distances, _ = cKDTree(centroids).query(centroids, k=2)
    nn = float(distances.mean() if reference_quirks else distances[:, 1].mean())
    return count, size, nn


def semantic_features(
    labels: np.ndarray | torch.Tensor,
    quadrant_images: bool = True,
    connectivity: str = "3d",
    no_neighbour_distance: float = NO_NEIGHBOUR_DISTANCE,
    reference_quirks: bool = False,
) -> dict[str, np.ndarray]:
    """The five Task 3 features of every image of one cube's pixel labels.

    Args:
        labels: ``pixel_labels`` of one cube, ``[N, H, W]`` consecutive slices (or one ``[H, W]`` image).
        quadrant_images: four images per slice (top-left, top-right, bottom-left, bottom-right), as the reference;
            ``False`` for one image per slice.
        connectivity: "3d" (reference) or "2d", see :func:`label_cells`.
        no_neighbour_distance: ``nn_distance`` of images with fewer than two cells (reference: 64).
        reference_quirks: see the module docstring.

    Returns:
        ``{feature: float64 array [M]}`` in :data:`FEATURES` order, ``M = 4N`` (quadrants) or ``N``, slice-major.
    """
    stack = _as_stack(labels)
    known = np.isin(stack, list(PIXEL_LABELS.values()))
    if not known.all():
        raise ValueError(
            f"pixel labels hold values {sorted(set(np.unique(stack[~known]).tolist()))} outside "
            f"{PIXEL_LABELS}; pass the pixel_labels channel (Task 2/3), not roi_labels."
        )
    if quadrant_images and (stack.shape[1] % 2 or stack.shape[2] % 2):
        raise ValueError(f"quadrant images need even slice sides, got {stack.shape[1:]}; use quadrant_images=False.")
    components = label_cells(stack, connectivity, PIXEL_LABELS["cell"])
    h, w = stack.shape[1:]
    top, bottom, left, right = slice(0, h // 2), slice(h // 2, h), slice(0, w // 2), slice(w // 2, w)
    windows = (
        [(top, left), (top, right), (bottom, left), (bottom, right)]
        if quadrant_images
        else [(slice(0, h), slice(0, w))]
    )
    rows: list[tuple[float, ...]] = []
    for z in range(stack.shape[0]):
        for ys, xs in windows:
            image = stack[z, ys, xs]
            count, size, nn = cell_stats(components[z, ys, xs], no_neighbour_distance, reference_quirks)
            rows.append(
                (
                    float(np.mean(image == PIXEL_LABELS["vessel"])),
                    float(np.mean(image == PIXEL_LABELS["axon"])),
                    float(count),
                    size,
                    nn,
                )
            )
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))
    return {name: table[:, i].copy() for i, name in enumerate(FEATURES)}


def feature_matrix(features: dict[str, np.ndarray], names: tuple[str, ...] = FEATURES) -> np.ndarray:
    """Stack a feature dictionary into ``[M, len(names)]`` (columns in ``names`` order)."""
    missing = [n for n in names if n not in features]
    if missing:
        raise ValueError(f"features lack {missing}; have {list(features)}.")
    return np.column_stack([np.asarray(features[n], dtype=np.float64) for n in names])
