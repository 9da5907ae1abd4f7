"""The Gaussian-centred sub-volume sampler: where crops land, and that they always lie inside the volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor, PatchDataset
from monai.utils import set_determinism
from scipy import stats

from neurobundles.subvolumes import crop_sigmas, gaussian_crop_starts
from neurobundles.transforms import RandGaussianCrop, RandGaussianCropd


def _centres(shape, roi, count, seed=0, **kwargs):
    crop = RandGaussianCrop(roi, num_samples=count, **kwargs)
    crop.set_random_state(seed)
    crop.randomize(shape)
    return crop.starts + np.asarray(roi) / 2


def test_centres_follow_the_truncated_normal_of_the_recipe():
    """σ = 64 around the middle of 256³, truncated so a 38³ crop fits: compare with scipy's distribution."""
    centres = _centres((256, 256, 256), (38, 38, 38), 6000)
    half = 19
    a, b = (half - 128) / 64, (256 - half - 128) / 64
    expected = stats.truncnorm(a, b, loc=128, scale=64)
    for axis in range(3):
        assert abs(centres[:, axis].mean() - expected.mean()) < 2.0
        assert abs(centres[:, axis].std() - expected.std()) < 2.0
        assert stats.kstest(centres[:, axis], expected.cdf).statistic < 0.03  # rounding to voxels shifts ≤ 0.5


def test_blog_covariance_gives_sigma_its_square_root():
    centres = _centres((256, 256, 256), (38, 38, 38), 4000, covariance=50.0)
    assert np.allclose(centres.std(axis=0), np.sqrt(50.0), rtol=0.06)
    assert np.allclose(centres.mean(axis=0), 128, atol=0.5)


@pytest.mark.parametrize(
    ("shape", "roi", "sigma"),
    [((256, 256, 256), (38, 38, 38), 64.0), ((40, 31, 38), (38, 16, 38), 64.0), ((50, 60, 70), (7, 9, 11), 500.0)],
)
def test_every_crop_lies_inside_the_volume(shape, roi, sigma):
    crop = RandGaussianCrop(roi, num_samples=2000, sigma=sigma)
    crop.set_random_state(1)
    crop.randomize(shape)
    assert (crop.starts >= 0).all() and (crop.starts + np.asarray(roi) <= np.asarray(shape)).all()


def test_crops_have_the_roi_size_and_the_matching_affine():
    image = MetaTensor(torch.arange(40 * 40 * 40, dtype=torch.float32).reshape(1, 40, 40, 40))
    crop = RandGaussianCrop((8, 10, 12), num_samples=5)
    crop.set_random_state(2)
    crops = crop(image)
    for index, (piece, start) in enumerate(zip(crops, crop.starts)):
        x, y, z = start
        assert piece.shape == (1, 8, 10, 12)
        assert torch.equal(piece.as_tensor(), image[:, x : x + 8, y : y + 10, z : z + 12].as_tensor())
        assert torch.equal(piece.affine[:3, 3], torch.as_tensor(start, dtype=torch.float64))
        assert piece.meta["patch_index"] == index


def test_same_seed_gives_the_same_crops():
    assert np.array_equal(_centres((64,) * 3, (16,) * 3, 50, seed=5), _centres((64,) * 3, (16,) * 3, 50, seed=5))


def test_set_determinism_makes_training_batches_reproducible():
    """As in train.json: MONAI's DataLoader seeds the sampler from torch's generator, which set_determinism seeds."""
    volumes = [{"image": torch.rand(1, 24, 24, 24)} for _ in range(2)]
    batches = []
    for _ in range(2):
        set_determinism(seed=3)
        sampler = RandGaussianCropd("image", roi_size=8, num_samples=4)
        loader = DataLoader(PatchDataset(volumes, sampler, samples_per_image=4), batch_size=8, num_workers=0)
        batches.append(next(iter(loader))["image"])
    set_determinism(None)
    assert torch.equal(*batches)


def test_zero_sigma_always_takes_the_middle_crop():
    starts = gaussian_crop_starts((40, 40, 40), (10, 10, 10), 10, np.random.default_rng(0), sigmas=(0.0, 0.0, 0.0))
    assert (starts == 15).all()


def test_sigma_and_covariance_together_are_refused():
    with pytest.raises(ValueError, match=r"give sigma or covariance"):
        crop_sigmas(10.0, 50.0, 3)


def test_default_sigma_is_the_original_codes_64_voxels():
    assert crop_sigmas(None, None, 3).tolist() == [64.0, 64.0, 64.0]


def test_crop_larger_than_the_volume_is_refused():
    crop = RandGaussianCrop(38, num_samples=1)
    with pytest.raises(ValueError, match=r"crops of \(38, 38, 38\) do not fit in a volume of shape \(32, 40, 40\)"):
        crop(torch.zeros(1, 32, 40, 40))


def test_dictionary_version_crops_every_key_alike_and_copies_the_rest():
    image = torch.rand(1, 30, 30, 30)
    label = (image * 4).floor()
    crop = RandGaussianCropd(["image", "label"], roi_size=6, num_samples=7)
    crop.set_random_state(4)
    samples = crop({"image": image, "label": label, "id": "sub-01"})
    assert len(samples) == 7
    for sample in samples:
        assert sample["id"] == "sub-01" and sample["image"].shape == (1, 6, 6, 6)
        assert torch.equal((sample["image"] * 4).floor(), sample["label"])


def test_dictionary_version_refuses_keys_of_different_shapes():
    crop = RandGaussianCropd(["image", "label"], roi_size=4, num_samples=1)
    with pytest.raises(ValueError, match=r"cannot crop keys of different spatial shapes together"):
        crop({"image": torch.zeros(1, 10, 10, 10), "label": torch.zeros(1, 10, 10, 9)})
