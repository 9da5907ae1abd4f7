"""Every kind of bad input gets an error naming the file and the problem."""

import nibabel as nib
import numpy as np
import pytest

from conftest import write_volume
from neurobundles.errors import InvalidImageError
from neurobundles.transforms import LoadVolume


def _volume():
    return np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("slice.nii.gz", _volume()[:, :, 0], r"is 2D with shape \(12, 12\)"),
        ("single_slice.nii.gz", _volume()[:, :, :1], r"is 2D with shape \(12, 12, 1\)"),
        ("series.nii.gz", np.stack([_volume()] * 3, -1), r"is 4D with 3 volumes.*fslroi"),
        ("zeros.nii.gz", np.zeros((12, 12, 12), np.float32), "every voxel equals 0"),
        ("nan.nii.gz", np.where(_volume() > 0.9, np.nan, _volume()).astype(np.float32), "NaN or infinite voxels"),
    ],
)
def test_unusable_volume_is_refused_with_the_reason(tmp_path, name, data, message):
    path = write_volume(tmp_path / name, data)
    with pytest.raises(InvalidImageError, match=message) as caught:
        LoadVolume()(path)
    assert str(path) in str(caught.value)


def test_single_volume_4d_file_is_accepted(tmp_path):
    path = write_volume(tmp_path / "one.nii.gz", _volume()[..., None])
    assert LoadVolume()(path).shape == (1, 12, 12, 12)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    with pytest.raises(InvalidImageError, match=r"empty\.nii\.gz: the file is empty"):
        LoadVolume()(path)


def test_truncated_file_is_refused(tmp_path, t1_crop):
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(t1_crop.read_bytes()[:500_000])
    with pytest.raises(InvalidImageError, match=r"truncated\.nii\.gz: cannot be read.*truncated"):
        LoadVolume()(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        LoadVolume()(tmp_path / "absent.nii.gz")


def test_mgz_loads_with_its_ras_affine(fsaverage):
    image = LoadVolume()(fsaverage / "mri" / "orig.mgz")
    assert image.shape == (1, 256, 256, 256)
    assert np.allclose(image.affine.numpy(), nib.load(str(fsaverage / "mri" / "orig.mgz")).affine)
