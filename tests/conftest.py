"""Shared fixtures: real data from the project's data setting, tiny generated volumes, a private cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # every test session starts from an empty cache, so mirror → cache → bundle paths are exercised
    os.environ["NEUROBUNDLES_HOME"] = tempfile.mkdtemp(prefix="neurobundles-test-home-")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``NEUROBUNDLES_DATA`` (default ``../shared/data``); real-data tests skip when it is absent."""
    from neurobundles.paths import data_dir

    root = data_dir()
    if root is None or not (root / "brainchop" / "t1_crop.nii.gz").is_file():
        pytest.skip("real data not found: set NEUROBUNDLES_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def t1_crop(shared_data: Path) -> Path:
    return shared_data / "brainchop" / "t1_crop.nii.gz"


@pytest.fixture(scope="session")
def fsaverage(shared_data: Path) -> Path:
    return shared_data / "freesurfer" / "fsaverage"


def write_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def head_phantom(tmp_path: Path) -> Path:
    """A small 3D 'head': bright ellipsoid with a darker core, 1.5 mm RAS voxels."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij"))
    radius = np.sqrt((grid**2 / np.array([0.8, 0.9, 0.7])[:, None, None, None] ** 2).sum(0))
    data = np.where(radius < 1, 80.0, 0.0) + np.where(radius < 0.6, 60.0, 0.0)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = -30
    return write_volume(tmp_path / "phantom.nii.gz", data.astype(np.float32), affine)
