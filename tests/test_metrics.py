import numpy as np
import pytest

from neurobundles.metrics import confusion_matrix, dice_per_class


def test_dice_matches_the_definition_class_by_class():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (30, 30, 30))
    pred = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 5, truth.shape))
    expected = [2 * ((pred == c) & (truth == c)).sum() / ((pred == c).sum() + (truth == c).sum()) for c in range(5)]
    assert np.allclose(dice_per_class(pred, truth, 5), expected)


def test_class_in_neither_map_has_no_dice():
    scores = dice_per_class(np.array([0, 1, 1]), np.array([0, 1, 0]), 3)
    assert np.isnan(scores[2]) and scores[1] == pytest.approx(2 / 3)


def test_out_of_range_labels_are_refused():
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
