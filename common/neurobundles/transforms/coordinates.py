"""Location channels for DeepNAT: Cartesian and spectral coordinates of a brain mask.

DeepNAT appends six numbers to every patch so that a patch knows where it lies in the brain: three Cartesian
coordinates relative to the mask's centre of mass and three *spectral* coordinates, the first three
non-constant eigenvectors of the graph Laplacian ``L = D − W`` of the mask's voxels (6-neighbours linked).
The eigenvectors vibrate roughly along the brain's long axes and do not depend on where the head lies in the
scanner (Wachinger et al., 2018, after Lombaert's spectral correspondence).

Solving the eigenproblem on every voxel of a 256³ mask (≈ 1.5–2.5 M unknowns) is slow, so it is solved on a
coarser grid (blocks of ``factor³`` voxels, chosen so that at most ``max_voxels`` remain) and interpolated back.
That grid is reached through a cascade of grids, each twice as coarse as the next: the coarsest (at most
``coarsest`` voxels) is solved by shift-invert Lanczos (``eigsh``); each finer grid by LOBPCG started from the
coarser grid's eigenvectors (interpolated) and preconditioned by a two-level method — Jacobi plus an exact solve
of the Galerkin operator on the coarser grid's voxels (aggregation). On fsaverage's mask (91 k voxels at
factor 3) that takes 22 LOBPCG iterations where Jacobi alone needs 148 (and LOBPCG from the Cartesian
coordinates with Jacobi, hundreds; shift-invert ``eigsh`` on 89 k voxels took 212 s elsewhere, LOBPCG 6.9 s).

Scaling: with unit edge weights on a grid of spacing ``H`` mm the graph Laplacian approximates ``−H²·Δ``, so its
eigenvalues ``λ`` correspond to the Neumann eigenvalues ``λ / H²`` of the continuous Laplacian (mm⁻²; reported
in the metadata), whatever the grid. Eigenvectors are only defined up to sign and — when two eigenvalues are
close, as the left–right and up–down modes of a brain are — up to order. Both are fixed by the Cartesian
axes: each of the three eigenvectors is assigned to the world axis (RAS) it correlates with most (an optimal
one-to-one assignment), and its sign makes that correlation positive. The maps are then scaled to zero mean
and unit root-mean-square over the mask, so they are comparable across subjects and resolutions.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg, splu

__all__ = [
    "CARTESIAN_SCALE",
    "CoordinateMaps",
    "CoordinateMapsd",
    "cartesian_coordinates",
    "coordinate_maps",
    "laplacian",
    "spectral_coordinates",
]

CARTESIAN_SCALE = 100.0
"""Millimetres per unit of the Cartesian coordinates (a brain then spans about −0.8..0.8 on each axis)."""

COARSEST = 20_000
"""Voxels of the coarsest grid of the cascade, solved directly (shift-invert Lanczos)."""


def _affine(affine: np.ndarray | torch.Tensor | None) -> np.ndarray:
    if affine is None:
        return np.eye(4)
    return np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)


def _as_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    values = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if values.ndim == 4:
        if values.shape[0] != 1:
            raise ValueError(f"the brain mask must have one channel, got shape {values.shape}.")
        values = values[0]
    if values.ndim != 3:
        raise ValueError(f"the brain mask must be X×Y×Z (or 1×X×Y×Z), got shape {values.shape}.")
    out = values > 0
    if not out.any():
        raise ValueError("the brain mask is empty; coordinates need at least one brain voxel.")
    return out


def cartesian_coordinates(
    mask: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor | None = None, scale: float = CARTESIAN_SCALE
) -> np.ndarray:
    """``3×X×Y×Z`` world (RAS) offsets from the mask's centre of mass, in units of ``scale`` mm, everywhere.

    Using the affine's direction and spacing makes the axes the same anatomical axes (right, anterior,
    superior) whatever the voxel order of the file.
    """
    inside = _as_mask(mask)
    matrix = _affine(affine)[:3, :3]
    centre = np.argwhere(inside).mean(0)
    axes = [np.arange(n, dtype=np.float64) - c for n, c in zip(inside.shape, centre)]
    out = np.zeros((3, *inside.shape), dtype=np.float32)
    for world in range(3):
        for axis in range(3):
            if matrix[world, axis] != 0:
                shape = [1, 1, 1]
                shape[axis] = -1
                out[world] += (matrix[world, axis] / scale * axes[axis]).reshape(shape).astype(np.float32)
    return out


def laplacian(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[sp.csr_matrix, np.ndarray]:
    """Graph Laplacian ``D − W`` of the mask's voxels (6-neighbours) and the ``(n, 3)`` voxel indices of its rows.

    Edge weights are ``(h_min / h_axis)²``: 1 on isotropic grids (the paper's graph), and the finite-difference
    Laplacian's weights on anisotropic ones.
    """
    inside = np.asarray(mask, dtype=bool)
    points = np.argwhere(inside)
    index = np.full(inside.shape, -1, dtype=np.int64)
    index[tuple(points.T)] = np.arange(len(points))
    spacing = np.asarray(spacing, dtype=np.float64)
    rows, cols, weights = [], [], []
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        both = inside[tuple(low)] & inside[tuple(high)]
        i, j = index[tuple(low)][both], index[tuple(high)][both]
        weight = (spacing.min() / spacing[axis]) ** 2
        rows += [i, j]
        cols += [j, i]
        weights.append(np.full(2 * len(i), weight))
    n = len(points)
    w = sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    degree = np.asarray(w.sum(axis=1)).ravel()
    return (sp.diags(degree) - w).tocsr(), points


def _coarsen(mask: np.ndarray, factor: int) -> np.ndarray:
    """Blocks of ``factor³`` voxels that are at least half brain, largest 6-connected component only."""
    if factor == 1:
        coarse = mask.copy()
    else:
        shape = [-(-n // factor) * factor for n in mask.shape]
        padded = np.zeros(shape, dtype=np.float32)
        padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
        blocks = padded.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor)
        coarse = blocks.mean(axis=(1, 3, 5)) >= 0.5
    labels, count = ndimage.label(coarse)
    if count > 1:
        coarse = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return coarse


def _sample(values: np.ndarray, coarse: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of per-voxel ``values`` (``n×k``, rows = ``coarse`` voxels in C order) at
    ``positions`` (``m×3``, in the coarse grid's index units); outside the mask the nearest voxel's value."""
    _, nearest = ndimage.distance_transform_edt(~coarse, return_indices=True)
    index = np.full(coarse.shape, -1, dtype=np.int64)
    index[coarse] = np.arange(int(coarse.sum()))
    filled_index = index[tuple(nearest)]
    out = np.empty((len(positions), values.shape[1]), dtype=np.float64)
    for column in range(values.shape[1]):
        grid = values[filled_index, column]
        out[:, column] = ndimage.map_coordinates(grid, positions.T, order=1, mode="nearest")
    return out


def _positions(points: np.ndarray, fine: int, coarse: int) -> np.ndarray:
    """Centres of voxels of a grid with blocks of ``fine`` voxels, in the index units of a ``coarse`` grid."""
    return (points * fine + (fine - 1) / 2 - (coarse - 1) / 2) / coarse


def _world_axes(points: np.ndarray, factor: int, affine: np.ndarray) -> np.ndarray:
    """World (RAS) offsets of the centres of blocks ``points`` (``n×3``) from their mean."""
    centres = points * factor + (factor - 1) / 2
    world = centres @ affine[:3, :3].T
    return world - world.mean(0)


def _aggregation(points: np.ndarray, coarse: np.ndarray) -> sp.csr_matrix:
    """``n×m`` 0/1 matrix: each voxel of a grid (``points``) → the voxel of the 2× coarser grid ``coarse`` holding
    it, or the nearest one when its block is not in the coarse mask."""
    _, nearest = ndimage.distance_transform_edt(~coarse, return_indices=True)
    index = np.full(coarse.shape, -1, dtype=np.int64)
    index[coarse] = np.arange(int(coarse.sum()))
    parent = np.minimum(points // 2, np.asarray(coarse.shape) - 1)
    columns = index[tuple(axis[tuple(parent.T)] for axis in nearest)]
    return sp.csr_matrix((np.ones(len(points)), (np.arange(len(points)), columns)), shape=(len(points), coarse.sum()))


def _two_level(matrix: sp.csr_matrix, aggregation: sp.csr_matrix) -> LinearOperator:
    """Preconditioner ``D⁻¹ + P (PᵀLP + εI)⁻¹ Pᵀ``: Jacobi for the rough part, a coarse solve for the smooth part."""
    inverse_diagonal = 1.0 / matrix.diagonal()
    coarse = (aggregation.T @ matrix @ aggregation).tocsc()
    coarse = coarse + 1e-4 * coarse.diagonal().mean() * sp.eye(coarse.shape[0], format="csc")
    solve = splu(coarse).solve

    def apply(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        vector = block.ndim == 1
        block = block.reshape(len(inverse_diagonal), -1)
        out = inverse_diagonal[:, None] * block + aggregation @ solve(np.asarray(aggregation.T @ block))
        return out.ravel() if vector else out

    n = matrix.shape[0]
    return LinearOperator((n, n), matvec=apply, matmat=apply, dtype=np.float64)


def _lowest(matrix: sp.csr_matrix, num: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``num`` smallest non-constant eigenpairs of a (connected) graph Laplacian, directly."""
    if matrix.shape[0] <= 500:
        values, vectors = np.linalg.eigh(matrix.toarray())
        return values[1 : num + 1], vectors[:, 1 : num + 1]
    start = np.random.default_rng(0).standard_normal(matrix.shape[0])
    shift = -1e-3 * matrix.diagonal().mean()
    values, vectors = eigsh(matrix.tocsc(), k=num + 1, sigma=shift, which="LM", v0=start)
    order = np.argsort(values)[1:]
    return values[order], vectors[:, order]


def _refine(
    matrix: sp.csr_matrix, start: np.ndarray, preconditioner: LinearOperator, tol: float, maxiter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """LOBPCG for the smallest non-constant eigenpairs, orthogonal to the constant vector, from ``start``."""
    n = matrix.shape[0]
    constant = np.full((n, 1), 1 / np.sqrt(n))
    values, vectors, history = lobpcg(
        matrix,
        start - constant @ (constant.T @ start),
        M=preconditioner,
        Y=constant,
        largest=False,
        tol=tol,
        maxiter=maxiter,
        retResidualNormsHistory=True,
    )
    order = np.argsort(values)
    return values[order], vectors[:, order], len(history)


def spectral_coordinates(
    mask: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor | None = None,
    max_voxels: int = 100_000,
    factor: int | None = None,
    num: int = 3,
    extra: int = 0,
    rtol: float = 1e-3,
    maxiter: int = 200,
    coarsest: int = COARSEST,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``num×X×Y×Z`` spectral coordinates of a brain mask (zero outside it) and how they were solved.

    Args:
        mask: brain mask ``X×Y×Z`` or ``1×X×Y×Z`` (non-zero = brain).
        affine: voxel-to-world matrix (orders/signs the maps by the world axes and sets the spacing); identity
            if ``None``.
        max_voxels: largest eigenproblem solved; the coarse factor is the smallest integer that meets it.
        factor: force the coarse factor instead (1 = full resolution).
        num: eigenvectors returned (3 in DeepNAT; more than 3 are ordered by eigenvalue after the first three).
        extra: additional eigenvectors carried through the cascade (dropped at the end).
        rtol: LOBPCG's residual tolerance relative to the smallest non-zero eigenvalue.
        maxiter: LOBPCG iterations per level.
        coarsest: voxels of the coarsest grid, solved directly.

    Returns:
        ``(maps, info)``; ``info`` holds ``factor``, ``levels`` (factor, voxels, iterations per level), the
        finest level's ``eigenvalues`` (graph units), ``eigenvalues_mm`` (mm⁻²), ``relative_residuals``
        (``‖Lv − λv‖ / (λ‖v‖)`` on that graph), ``correlations`` with the world axes and ``seconds``.
    """
    began = time.perf_counter()
    inside = _as_mask(mask)
    matrix4 = _affine(affine)
    spacing = np.sqrt((matrix4[:3, :3] ** 2).sum(0))
    total = int(inside.sum())
    if factor is None:
        factor = 1
        while total / factor**3 > max_voxels:
            factor += 1
    factors = [int(factor)]
    grids = [_coarsen(inside, factors[0])]
    while int(grids[-1].sum()) > coarsest:
        factors.append(factors[-1] * 2)
        grids.append(_coarsen(inside, factors[-1]))
    width = num + extra
    levels = []
    matrix, points = laplacian(grids[-1], spacing)
    values, vectors = _lowest(matrix, width)
    levels.append({"factor": factors[-1], "voxels": len(points), "iterations": 0})
    for level in range(len(factors) - 2, -1, -1):
        matrix, points = laplacian(grids[level], spacing)
        start = _sample(vectors, grids[level + 1], _positions(points, factors[level], factors[level + 1]))
        preconditioner = _two_level(matrix, _aggregation(points, grids[level + 1]))
        tol = rtol * float(values[0]) * (factors[level] / factors[level + 1]) ** 2
        values, vectors, iterations = _refine(matrix, start, preconditioner, tol, maxiter)
        levels.append({"factor": factors[level], "voxels": len(points), "iterations": iterations})
    values, vectors = values[:num], vectors[:, :num]
    residuals = np.linalg.norm(matrix @ vectors - vectors * values, axis=0) / (
        np.abs(values) * np.linalg.norm(vectors, axis=0)
    )
    # order and sign by the world axes
    world = _world_axes(points, factors[0], matrix4)
    correlation = _correlation(vectors[:, :3], world)
    rows, cols = linear_sum_assignment(-np.abs(correlation))
    order = [int(rows[np.argmax(cols == axis)]) for axis in range(3)] + list(range(3, num))
    signs = np.array([np.sign(correlation[order[axis], axis]) or 1.0 for axis in range(3)] + [1.0] * (num - 3))
    values, vectors = values[order], vectors[:, order] * signs
    residuals = residuals[order]
    correlation = correlation[order[:3]] * signs[:3, None]
    # back to full resolution, normalised over the mask
    full = np.argwhere(inside)
    samples = _sample(vectors, grids[0], _positions(full, 1, factors[0]))
    samples -= samples.mean(0)
    samples /= np.sqrt((samples**2).mean(0))
    maps = np.zeros((num, *inside.shape), dtype=np.float32)
    for column in range(num):
        maps[column][tuple(full.T)] = samples[:, column]
    step = factors[0] * spacing.min()
    info = {
        "factor": factors[0],
        "levels": levels[::-1],
        "eigenvalues": values.tolist(),
        "eigenvalues_mm": (values / step**2).tolist(),
        "relative_residuals": residuals.tolist(),
        "correlations": np.diag(correlation).tolist(),
        "seconds": time.perf_counter() - began,
    }
    return maps, info


def _correlation(vectors: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``vectors`` with every column of ``axes``."""
    a = vectors - vectors.mean(0)
    b = axes - axes.mean(0)
    return (a.T @ b) / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))


def coordinate_maps(
    mask: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor | None = None,
    scale: float = CARTESIAN_SCALE,
    **spectral: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """DeepNAT's six coordinate channels ``6×X×Y×Z``: Cartesian (R, A, S) then spectral; and the spectral info."""
    inside = _as_mask(mask)
    maps, info = spectral_coordinates(inside, affine, **spectral)
    return np.concatenate([cartesian_coordinates(inside, affine, scale), maps[:3]]), info


class CoordinateMaps(Transform):
    """Brain mask ``1×X×Y×Z`` → DeepNAT's six coordinate maps ``6×X×Y×Z`` (float32, the mask's metadata).

    Channels: Cartesian offsets from the mask's centre of mass along right, anterior, superior (in units of
    ``scale`` mm, defined everywhere), then the three spectral coordinates ordered and signed like them
    (zero outside the mask). The affine is read from the mask's metadata (MetaTensor); the spectral solve's
    summary is stored under ``meta["spectral"]``.

    Args:
        scale: millimetres per unit of the Cartesian coordinates.
        max_voxels: largest eigenproblem solved (see :func:`spectral_coordinates`).
        factor: force the coarse factor of the spectral solve.
    """

    def __init__(self, scale: float = CARTESIAN_SCALE, max_voxels: int = 100_000, factor: int | None = None) -> None:
        self.scale, self.max_voxels, self.factor = scale, max_voxels, factor

    def __call__(self, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
        affine = mask.affine if isinstance(mask, MetaTensor) else None
        maps, info = coordinate_maps(mask, affine, self.scale, max_voxels=self.max_voxels, factor=self.factor)
        out = torch.from_numpy(maps)
        if isinstance(mask, MetaTensor):
            out = MetaTensor(out, meta=dict(mask.meta))
            out.meta["spectral"] = info
        return out


class CoordinateMapsd(MapTransform):
    """Dictionary version of :class:`CoordinateMaps`: adds ``coords_key`` computed from the mask under ``keys``.

    Args:
        keys: the brain-mask key (one key; ``allow_missing_keys`` skips it when absent).
        coords_key: where to store the six maps.
    """

    def __init__(
        self,
        keys: KeysCollection,
        coords_key: str = "coords",
        scale: float = CARTESIAN_SCALE,
        max_voxels: int = 100_000,
        factor: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"CoordinateMapsd takes one brain-mask key, got {list(self.keys)}.")
        self.coords_key = coords_key
        self.transform = CoordinateMaps(scale, max_voxels, factor)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.coords_key] = self.transform(d[key])
        return d
