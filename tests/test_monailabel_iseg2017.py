"""MONAI Label serves and trains ``unet3d_iseg2017_tissue``: a two-contrast bundle whose T2 travels beside the T1.

MONAI Label hands a bundle one image, the study the user opened. This bundle finds the subject's T2 beside it in
the studies folder (``subject-11_T1.nii.gz`` → ``subject-11_T2.nii.gz``), or takes it from the request's
``params`` (``{"t2": "<image id or path>"}``). The bundle is exported with seeded weights (it publishes none) and
a small network, so the round trip takes seconds on CPU; run with ``bash .ci/run-monailabel``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("monailabel", reason="MONAI Label is not installed here; run bash .ci/run-monailabel")

from layouts_iseg2017 import subject_arrays
from monailabel_server import download_app, infer, running_server, seeded_bundle
from neurobundles.zoo import run_workflow
from neurobundles.zoo.packaging import export_bundle

pytestmark = [pytest.mark.monailabel, pytest.mark.slow]

BUNDLE = "unet3d_iseg2017_tissue"
SMALL = {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 8}
CROP = (slice(40, 104), slice(60, 140), slice(90, 170))


def _small(config: dict) -> None:
    """2 base filters and 32³ windows (the bundle is exported with seeded weights: it publishes none)."""
    config["network_def"].update(init_filters=2, dropout=0.0)
    config.update(SMALL)


def _nifti(path: Path, data: np.ndarray) -> Path:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -40.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[CROP]), affine), str(path))
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MONAI Label's monaibundle sample app with the small, seeded bundle in its model folder."""
    root = tmp_path_factory.mktemp("monailabel")
    download_app(root)
    seeded_bundle(export_bundle(BUNDLE, root / "monaibundle" / "model"), _small)
    return root / "monaibundle"


@pytest.fixture(scope="module")
def studies(fsaverage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studies folder: subject-11 (T1 and T2, NIfTI crops of a fixture subject) and a T1 without its T2."""
    folder = tmp_path_factory.mktemp("studies")
    t1, t2, _ = subject_arrays(fsaverage.parent, 11)
    _nifti(folder / "subject-11_T1.nii.gz", t1), _nifti(folder / "subject-11_T2.nii.gz", t2)
    _nifti(folder / "lonely_T1.nii.gz", t1)
    return folder


@pytest.fixture(scope="module")
def server(app: Path, studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``monailabel start_server`` on 127.0.0.1 serving the bundle; yields (URL, log file)."""
    with running_server(app, studies, BUNDLE, tmp_path_factory) as (url, log):
        yield url, log


def test_server_lists_the_bundle_with_its_tissues(server: tuple[str, Path]) -> None:
    with urllib.request.urlopen(f"{server[0]}/info/", timeout=30) as response:
        model = json.load(response)["models"][BUNDLE]
    assert model["labels"] == {"csf": 1, "gm": 2, "wm": 3}


def test_server_finds_the_t2_beside_the_t1_and_infers_what_the_bundle_does(
    server: tuple[str, Path], app: Path, studies: Path, tmp_path: Path
) -> None:
    served = infer(server[0], BUNDLE, "subject-11_T1", tmp_path / "served.nii.gz")
    t1 = studies / "subject-11_T1.nii.gz"
    source = nib.load(str(t1))
    assert served.shape == source.shape and np.allclose(served.affine, source.affine, atol=1e-4)
    run_workflow(app / "model" / BUNDLE, dataset_dir=[str(t1)], output_dir=str(tmp_path / "bundle"))
    expected = np.asarray(nib.load(str(tmp_path / "bundle" / "subject-11_seg.nii.gz")).dataobj)
    labels = np.asarray(served.dataobj).astype(expected.dtype)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    assert (labels == expected).mean() >= 0.999


def test_a_t2_named_in_the_request_is_used(server: tuple[str, Path], tmp_path: Path) -> None:
    beside = np.asarray(infer(server[0], BUNDLE, "subject-11_T1", tmp_path / "a.nii.gz").dataobj)
    named = np.asarray(infer(server[0], BUNDLE, "lonely_T1", tmp_path / "b.nii.gz", {"t2": "subject-11_T2"}).dataobj)
    assert np.array_equal(beside, named)  # lonely_T1 is subject-11's T1 under another name


def test_a_t1_without_t2_is_refused_with_the_reason_in_the_log(server: tuple[str, Path], tmp_path: Path) -> None:
    url, log = server
    with pytest.raises(urllib.error.HTTPError):
        infer(url, BUNDLE, "lonely_T1", tmp_path / "c.nii.gz")
    expected = "lonely_T1.nii.gz: no T2 image found beside this T1 (looked for lonely_T2.nii.gz"
    deadline = time.monotonic() + 30  # the server logs the traceback after answering
    while expected not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected in log.read_text()
    assert '{"t2": "<image id or path>"} in a MONAI Label request' in log.read_text()


def test_trainer_trains_the_bundle_on_a_labelled_study(app: Path, fsaverage: Path, tmp_path: Path) -> None:
    """MONAI Label's bundle trainer on a study whose T2 lies beside it and whose label holds class indices 0–3
    (as MONAI Label saves them): ``models/model.pt`` is rewritten."""
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    bundle_dir = tmp_path / "bundles" / BUNDLE
    shutil.copytree(app / "model" / BUNDLE, bundle_dir)
    train_file = bundle_dir / "configs" / "train.json"
    config = json.loads(train_file.read_text())
    config.update(train_samples=8, val_samples=4, batch_size=2, threshold=0.02, num_workers=0)
    train_file.write_text(json.dumps(config, indent=4))
    studies = tmp_path / "studies"
    t1, t2, label = subject_arrays(fsaverage.parent, 2)
    _nifti(studies / "subject-2_T1.nii.gz", t1), _nifti(studies / "subject-2_T2.nii.gz", t2)
    _nifti(
        studies / "labels" / "final" / "subject-2_T1.nii.gz", np.searchsorted([0, 10, 150, 250], label).astype(np.uint8)
    )
    before = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)

    task = BundleTrainTask(str(bundle_dir), {})
    assert task.is_valid()
    datastore = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    task({"model": BUNDLE, "max_epochs": 1, "val_split": 0.0, "device": "cpu", "multi_gpu": False}, datastore)

    after = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
