"""MONAI Label serves ``deepnat_miccai2012_anatomy``: a patch network whose inference needs a brain mask and
coordinates computed from it, all inside the bundle's own preprocessing.

The bundle is exported with seeded weights (it publishes none), a narrow network and ``brain_mask`` ``nonzero``
(the study is skull-stripped: FreeSurfer's ``brainmask.mgz`` of fsaverage at 3 mm), so the round trip takes
seconds on CPU; run with ``bash .ci/run-monailabel``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel", reason="MONAI Label is not installed here; run bash .ci/run-monailabel")

from monailabel_server import download_app, infer, running_server, seeded_bundle
from neurobundles.data.miccai2012 import OUTPUT_IDS
from neurobundles.zoo import run_workflow
from neurobundles.zoo.packaging import export_bundle

pytestmark = [pytest.mark.monailabel, pytest.mark.slow]

BUNDLE = "deepnat_miccai2012_anatomy"
SMALL = {"channels": [4, 8, 8], "fc_channels": [32, 16], "dropout": 0.0, "brain_mask": "nonzero"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monailabel")
    download_app(root)
    seeded_bundle(export_bundle(BUNDLE, root / "monaibundle" / "model"), lambda config: config.update(SMALL))
    return root / "monaibundle"


@pytest.fixture(scope="module")
def studies(fsaverage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("studies")
    brain = nib.load(str(fsaverage / "mri" / "brainmask.mgz"))
    values = np.asarray(brain.dataobj, dtype=np.float32)[::3, ::3, ::3]
    nib.save(nib.Nifti1Image(values, brain.affine @ np.diag([3.0, 3.0, 3.0, 1.0])), str(folder / "brain.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def server(app: Path, studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with running_server(app, studies, BUNDLE, tmp_path_factory) as (url, log):
        yield url, log


def test_server_lists_the_bundle_with_its_structures(server: tuple[str, Path]) -> None:
    with urllib.request.urlopen(f"{server[0]}/info/", timeout=30) as response:
        model = json.load(response)["models"][BUNDLE]
    assert model["labels"]["left-hippocampus"] == 13 and len(model["labels"]) == 25


def test_server_infers_what_the_bundle_does(server: tuple[str, Path], app: Path, studies: Path, tmp_path: Path) -> None:
    served = infer(server[0], BUNDLE, "brain", tmp_path / "served.nii.gz")
    source = nib.load(str(studies / "brain.nii.gz"))
    assert served.shape == source.shape and np.allclose(served.affine, source.affine, atol=1e-4)
    run_workflow(app / "model" / BUNDLE, dataset_dir=[str(studies / "brain.nii.gz")], output_dir=str(tmp_path / "b"))
    expected = np.asarray(nib.load(str(tmp_path / "b" / "brain_seg.nii.gz")).dataobj)
    labels = np.asarray(served.dataobj).astype(expected.dtype)
    assert set(np.unique(labels).tolist()) <= set(OUTPUT_IDS)
    assert (labels == expected).mean() >= 0.999
