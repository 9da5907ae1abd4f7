"""MTNeuro Task 3 readouts: how linearly frozen embeddings predict the semantic features, and the baselines.

- :func:`linear_readout_r2`: R² of an ordinary least-squares fit (scikit-learn ``LinearRegression``, as the
  reference) of each feature from the embeddings. The paper fits and scores on all images ("no train and test
  split in this case"), which is the default ``test_fraction=0``; ``test_fraction > 0`` scores on held-out images
  instead (pass ``groups``, e.g. slice indices, to keep correlated neighbouring slices on one side), and
  ``alpha > 0`` uses ``Ridge``.
- :func:`baseline_embeddings`: PCA and NMF (256 components) of the flattened images, the paper's unlearned
  baselines; NMF needs non-negative input (images in [0, 1], before any normalisation).
- :func:`baseline_classification`: the Task 1 PCA/NMF baseline, a linear classifier (multinomial logistic
  regression) on those components.
- :func:`write_table3_csv`: methods × features, "mean ± std" over runs (seeds), the layout of the paper's Table 3.
- :func:`plot_embedding_scatter`: a 2D map of the embeddings coloured by each feature; UMAP when ``umap-learn`` is
  installed (the paper's figure), else PCA.

Standard deviations over runs are population standard deviations (``numpy.std``, ``ddof=0``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import NMF, PCA
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.preprocessing import StandardScaler

from neurobundles.atomic import atomic_save, atomic_write_text
from neurobundles.mtneuro.features import FEATURE_TITLES, FEATURES
from neurobundles.mtneuro.regions import REGIONS

__all__ = [
    "baseline_classification",
    "baseline_embeddings",
    "linear_readout_r2",
    "plot_embedding_scatter",
    "summarise",
    "write_readout_long_csv",
    "write_table3_csv",
]


def _matrix(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if array.ndim < 2:
        raise ValueError(f"{what} must be [N, ...] with one row per image, got shape {array.shape}.")
    return array.reshape(len(array), -1)


def linear_readout_r2(
    embeddings: np.ndarray | torch.Tensor,
    features: Mapping[str, np.ndarray],
    test_fraction: float = 0.0,
    alpha: float = 0.0,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """R² of a linear regression of each feature from the embeddings.

    Args:
        embeddings: ``[N, D]`` one row per image (same order as the features).
        features: ``{name: [N]}``, e.g. from :func:`neurobundles.mtneuro.features.semantic_features`.
        test_fraction: 0 fits and scores on all images (the paper); otherwise the held-out fraction scored.
        alpha: 0 for ordinary least squares (the reference), > 0 for ridge regression with that penalty.
        seed: seed of the train/test split.
        groups: ``[N]`` group of each image for a grouped split (a group never straddles train and test).

    Returns:
        ``{feature: R²}`` in the order of ``features``.
    """
    x = _matrix(embeddings, "embeddings")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    if test_fraction == 0:
        train, test = np.arange(len(x)), np.arange(len(x))
    else:
        splitter = (GroupShuffleSplit if groups is not None else ShuffleSplit)(
            n_splits=1, test_size=test_fraction, random_state=seed
        )
        train, test = next(splitter.split(x, groups=groups))
    scores = {}
    for name, values in features.items():
        y = np.asarray(values, dtype=np.float64)
        if y.shape != (len(x),):
            raise ValueError(f"feature {name!r} has shape {y.shape}; it needs one value per embedding ({len(x)}).")
        model = Ridge(alpha=alpha) if alpha > 0 else LinearRegression()
        model.fit(x[train], y[train])
        scores[name] = float(r2_score(y[test], model.predict(x[test])))
    return scores


def _fit_decomposition(kind: str, fit: np.ndarray, n_components: int, seed: int) -> PCA | NMF:
    if n_components > min(fit.shape):
        raise ValueError(
            f"{n_components} components need at least that many images and pixels, got {fit.shape[0]} images of "
            f"{fit.shape[1]} pixels; lower n_components or fit on more images."
        )
    kind = kind.lower()
    if kind == "pca":
        model = PCA(n_components=n_components, random_state=seed)
    elif kind == "nmf":
        if fit.min() < 0:
            raise ValueError("NMF needs non-negative images; pass intensities in [0, 1] before normalisation.")
        model = NMF(n_components=n_components, init="nndsvda", max_iter=500, random_state=seed)
    else:
        raise ValueError(f"kind must be 'pca' or 'nmf', got {kind!r}.")
    return model.fit(fit)


def _transform(model: PCA | NMF, x: np.ndarray) -> np.ndarray:
    if x.shape[1] != model.n_features_in_:
        raise ValueError(f"images have {x.shape[1]} pixels, the decomposition was fitted on {model.n_features_in_}.")
    if isinstance(model, NMF) and x.min() < 0:
        raise ValueError("NMF needs non-negative images; pass intensities in [0, 1] before normalisation.")
    return model.transform(x).astype(np.float32)


def baseline_embeddings(
    kind: str,
    images: np.ndarray | torch.Tensor,
    n_components: int = 256,
    fit_images: np.ndarray | torch.Tensor | None = None,
    seed: int = 0,
) -> np.ndarray:
    """PCA or NMF components of flattened images, fitted on ``fit_images`` (default: ``images`` themselves).

    Args:
        kind: "pca" or "nmf".
        images: ``[N, ...]`` images to embed.
        n_components: embedding size (paper: 256).
        fit_images: images the decomposition is fitted on (e.g. the training tiles).
        seed: random state of the decomposition.
    """
    x = _matrix(images, "images")
    fit = _matrix(fit_images, "fit_images") if fit_images is not None else x
    return _transform(_fit_decomposition(kind, fit, n_components, seed), x)


def baseline_classification(
    kind: str,
    train_images: np.ndarray | torch.Tensor,
    train_labels: np.ndarray,
    test_images: np.ndarray | torch.Tensor,
    test_labels: np.ndarray,
    n_components: int = 256,
    num_classes: int = len(REGIONS),
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """Task 1 PCA/NMF baseline: components fitted on the training images, a linear classifier on top
    (multinomial logistic regression on standardised components).

    Returns:
        test accuracy and confusion matrix (rows: true class, columns: predicted).
    """
    train_x = _matrix(train_images, "train_images")
    model = _fit_decomposition(kind, train_x, n_components, seed)
    train, test = _transform(model, train_x), _transform(model, _matrix(test_images, "test_images"))
    scaler = StandardScaler().fit(train)
    classifier = LogisticRegression(max_iter=2000, random_state=seed).fit(scaler.transform(train), train_labels)
    predicted = classifier.predict(scaler.transform(test)).astype(np.int64)
    truth = np.asarray(test_labels).astype(np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    return float((predicted == truth).mean()), confusion


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over runs."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())


def write_table3_csv(
    path: str | Path,
    results: Mapping[str, Sequence[Mapping[str, float]]],
    features: Sequence[str] = FEATURES,
    decimals: int = 2,
) -> Path:
    """Write R² as the paper's Table 3: one row per method, one column per feature.

    Args:
        path: CSV to write (atomically).
        results: ``{method: [ {feature: R²} per run ]}``; one run gives a plain number, several "mean ± std".
        features: feature columns, in order.
        decimals: digits after the point.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Methods", *(FEATURE_TITLES.get(f, f) for f in features)])
    for method, runs in results.items():
        if not runs:
            raise ValueError(f"method {method!r} has no runs.")
        cells = []
        for feature in features:
            values = [run[feature] for run in runs]
            mean, std = summarise(values)
            cells.append(f"{mean:.{decimals}f}" if len(values) == 1 else f"{mean:.{decimals}f} ± {std:.{decimals}f}")
        writer.writerow([method, *cells])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def write_readout_long_csv(
    path: str | Path, results: Mapping[str, Sequence[Mapping[str, float]]], seeds: Sequence[int] | None = None
) -> Path:
    """Write every R² as a row ``method, run, seed, feature, r2`` (for tools; full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "run", "seed", "feature", "r2"])
    for method, runs in results.items():
        for i, run in enumerate(runs):
            seed = "" if seeds is None else seeds[i]
            for feature, value in run.items():
                writer.writerow([method, i, seed, feature, repr(float(value))])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def _projection(embeddings: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    if method == "auto":
        method = "umap" if importlib.util.find_spec("umap") is not None else "pca"
    scaled = StandardScaler().fit_transform(embeddings)
    if method == "umap":
        import umap  # optional: umap-learn

        n_neighbors = max(2, min(100, len(scaled) - 1))  # the reference used 100 neighbours
        return umap.UMAP(n_neighbors=n_neighbors, random_state=seed).fit_transform(scaled), "umap"
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(scaled), "pca"
    raise ValueError(f"method must be 'auto', 'umap' or 'pca', got {method!r}.")


def plot_embedding_scatter(
    path: str | Path,
    embeddings: np.ndarray | torch.Tensor,
    features: Mapping[str, np.ndarray],
    regions: np.ndarray | None = None,
    region_names: Sequence[str] = REGIONS,
    method: str = "auto",
    seed: int = 42,
) -> str:
    """Write a PNG of the embeddings projected to 2D, one panel per feature (and one for regions if given).

    Args:
        path: PNG to write (atomically).
        embeddings: ``[N, D]``.
        features: ``{name: [N]}`` values that colour each panel.
        regions: optional ``[N]`` region indices for a categorical panel.
        region_names: names of the region indices.
        method: "auto" (UMAP if ``umap-learn`` is installed, else PCA), "umap" or "pca".
        seed: random state of the projection.

    Returns:
        the projection used, "umap" or "pca".
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = _matrix(embeddings, "embeddings")
    points, used = _projection(x, method, seed)
    panels: list[tuple[str, np.ndarray | None]] = [
        (FEATURE_TITLES.get(k, k), np.asarray(v)) for k, v in features.items()
    ]
    if regions is not None:
        panels.insert(0, ("Brain region", None))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for i, (title, values) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        if values is None:
            region_array = np.asarray(regions)
            for index, name in enumerate(region_names):
                chosen = region_array == index
                axes.scatter(points[chosen, 0], points[chosen, 1], s=4, label=name, alpha=0.7)
            axes.legend(markerscale=3, fontsize=8)
        else:
            scatter = axes.scatter(points[:, 0], points[:, 1], c=values, s=4, cmap="viridis", alpha=0.8)
            figure.colorbar(scatter, ax=axes, shrink=0.8)
        axes.set_title(title)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"{used.upper()} of {x.shape[1]}-d embeddings ({len(x)} images)")
    atomic_save(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return used
