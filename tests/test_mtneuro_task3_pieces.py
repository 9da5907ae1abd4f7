"""MTNeuro Task 3 pieces: semantic features on constructed label images, linear readouts, PCA/NMF, table and plot."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from neurobundles.mtneuro.features import (
    FEATURES,
    NO_NEIGHBOUR_DISTANCE,
    feature_matrix,
    label_cells,
    semantic_features,
)
from neurobundles.mtneuro.readout import (
    baseline_classification,
    baseline_embeddings,
    linear_readout_r2,
    plot_embedding_scatter,
    write_readout_long_csv,
    write_table3_csv,
)

VESSEL, CELL, AXON = 1, 2, 3


def constructed_slice() -> np.ndarray:
    """A 256² pixel-label slice whose four 128² quadrants have hand-countable contents.

    top-left:     9 cells of 3×3 on a 20-pixel grid, a 10×128 vessel band
    top-right:    one 4×5 cell, a 32×128 axon band
    bottom-left:  nothing
    bottom-right: a 2×2 and a 4×4 cell, centroids (10.5, 10.5) and (11.5, 41.5)
    """
    labels = np.zeros((256, 256), dtype=np.uint64)
    for cy in (20, 40, 60):
        for cx in (20, 40, 60):
            labels[cy - 1 : cy + 2, cx - 1 : cx + 2] = CELL
    labels[100:110, 0:128] = VESSEL
    labels[0:32, 128:256] = AXON
    labels[60:64, 200:205] = CELL
    labels[128 + 10 : 128 + 12, 128 + 10 : 128 + 12] = CELL
    labels[128 + 10 : 128 + 14, 128 + 40 : 128 + 44] = CELL
    return labels


def test_features_equal_hand_computed_values_per_quadrant():
    features = semantic_features(constructed_slice())
    assert list(features) == list(FEATURES)
    np.testing.assert_allclose(features["vessels"], [1280 / 128**2, 0, 0, 0])
    np.testing.assert_allclose(features["axons"], [0, 32 * 128 / 128**2, 0, 0])
    np.testing.assert_array_equal(features["cell_count"], [9, 1, 0, 2])
    np.testing.assert_allclose(features["cell_size"], [9, 20, 0, (4 + 16) / 2])
    far = NO_NEIGHBOUR_DISTANCE
    np.testing.assert_allclose(features["nn_distance"], [20, far, far, math.hypot(1, 31)])
    assert feature_matrix(features).shape == (4, 5)


def test_whole_slice_images():
    features = semantic_features(constructed_slice(), quadrant_images=False)
    np.testing.assert_allclose(features["vessels"], [1280 / 256**2])
    np.testing.assert_array_equal(features["cell_count"], [12])
    np.testing.assert_allclose(features["cell_size"], [(9 * 9 + 20 + 4 + 16) / 12])


def test_reference_quirks_halve_the_distance_and_zero_a_single_cell():
    features = semantic_features(constructed_slice(), reference_quirks=True)
    np.testing.assert_allclose(features["nn_distance"], [10, 64, 64, math.hypot(1, 31) / 2])
    np.testing.assert_allclose(features["cell_size"], [9, 0, 0, 10])


def test_cells_are_6_connected_in_3d_or_4_connected_in_2d():
    stack = np.zeros((2, 8, 8), dtype=np.int64)
    stack[0, 2, 1:6] = CELL  # a bar in slice 0 ...
    stack[1, 2, 1] = stack[1, 2, 5] = CELL  # ... joins two separate pixels of slice 1
    stack[1, 5, 5] = stack[1, 6, 6] = CELL  # diagonal neighbours: never connected
    assert label_cells(stack, "3d").max() == 3
    assert label_cells(stack, "2d").max() == 5
    three_d = semantic_features(stack, quadrant_images=False)
    two_d = semantic_features(stack, quadrant_images=False, connectivity="2d")
    assert three_d["cell_count"].tolist() == [1, 3] and two_d["cell_count"].tolist() == [1, 4]
    # slice 1: the two pixels joined through slice 0 are one cell of 2 pixels, beside two 1-pixel cells
    assert three_d["cell_size"][1] == pytest.approx(4 / 3)


def test_feature_inputs_are_checked():
    with pytest.raises(ValueError, match="pixel_labels"):
        semantic_features(np.full((4, 4), 5))
    with pytest.raises(ValueError, match="connectivity"):
        label_cells(np.zeros((1, 4, 4), dtype=np.int64), "8")
    with pytest.raises(ValueError, match="even"):
        semantic_features(np.zeros((5, 5), dtype=np.int64))


def test_r2_of_a_feature_linear_in_the_embedding_is_one():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(300, 24))
    linear = embeddings @ rng.normal(size=24) + 3.0
    noise = rng.normal(size=300)
    scores = linear_readout_r2(embeddings, {"linear": linear, "noise": noise})
    assert scores["linear"] == pytest.approx(1.0, abs=1e-9)
    assert scores["noise"] < 0.2  # in-sample R² of noise: about 24 / 300
    held_out = linear_readout_r2(embeddings, {"linear": linear, "noise": noise}, test_fraction=0.25, seed=1)
    assert held_out["linear"] == pytest.approx(1.0, abs=1e-9) and held_out["noise"] < 0.05
    grouped = linear_readout_r2(embeddings, {"linear": linear}, test_fraction=0.3, groups=np.arange(300) // 10)
    ridge = linear_readout_r2(embeddings, {"linear": linear}, alpha=1e-3)
    assert grouped["linear"] == pytest.approx(1.0, abs=1e-9) and ridge["linear"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="one value per embedding"):
        linear_readout_r2(embeddings, {"short": linear[:10]})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pca_and_nmf_baselines_run():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(60, 8, 8))
    pca = baseline_embeddings("pca", images, n_components=16)
    nmf = baseline_embeddings("nmf", images, n_components=16)
    assert pca.shape == nmf.shape == (60, 16) and nmf.min() >= 0
    fitted_elsewhere = baseline_embeddings("pca", images[:5], n_components=16, fit_images=images)
    np.testing.assert_allclose(fitted_elsewhere, pca[:5], atol=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        baseline_embeddings("nmf", images - 0.5, n_components=4)
    with pytest.raises(ValueError, match="lower n_components"):
        baseline_embeddings("pca", images, n_components=256)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # NMF on 36-pixel toy images
def test_baseline_classification_separates_regions_that_differ_in_brightness():
    rng = np.random.default_rng(1)

    def tiles(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(4), n)
        return rng.uniform(size=(4 * n, 6, 6)) * 0.3 + labels[:, None, None] * 0.2, labels

    (train_x, train_y), (test_x, test_y) = tiles(20), tiles(10)
    for kind in ("pca", "nmf"):
        accuracy, confusion = baseline_classification(kind, train_x, train_y, test_x, test_y, n_components=8)
        assert accuracy >= 0.9 and confusion.sum() == 40


def test_table3_csv_has_the_paper_layout(tmp_path):
    runs = [{f: 0.8 + 0.01 * i for f in FEATURES} for i in range(5)]
    results = {"BYOL": runs, "PCA": [{f: 0.75 for f in FEATURES}]}
    path = write_table3_csv(tmp_path / "table3.csv", results)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["Methods", "Vessels", "Axons", "Cell Count", "Cell Size", "Dist (k=1)"]
    assert rows[1] == ["BYOL"] + ["0.82 ± 0.01"] * 5
    assert rows[2] == ["PCA"] + ["0.75"] * 5
    long = list(csv.DictReader(write_readout_long_csv(tmp_path / "r2.csv", results, None).open()))
    assert len(long) == 6 * 5 and long[0]["method"] == "BYOL" and float(long[5]["r2"]) == pytest.approx(0.81)


def test_scatter_png_falls_back_to_pca(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(40, 8))
    features = {f: rng.uniform(size=40) for f in FEATURES}
    used = plot_embedding_scatter(
        tmp_path / "scatter.png", embeddings, features, regions=np.arange(40) % 4, method="pca"
    )
    assert used == "pca"
    assert (tmp_path / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_embedding_scatter(tmp_path / "auto.png", embeddings, {"vessels": features["vessels"]}) in {
        "pca",
        "umap",
    }
