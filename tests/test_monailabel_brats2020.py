"""MONAI Label serves ``segnet_brats2020_wholetumor``: a three-sequence bundle whose other sequences travel beside
the image the user opened.

MONAI Label hands a bundle one image, the study open in the viewer — for a tumour, usually the FLAIR
(``BraTS20_Training_002_flair.nii.gz``). The bundle finds the case's T1 and T2 beside it in the studies folder by
name (``..._t1.nii.gz``, ``..._t2.nii.gz``), or takes them from the request's ``params``
(``{"t1": "<image id or path>", "t2": ...}``). The bundle is exported with seeded weights (it publishes none), a
narrow network and its cut at the median logit of the case's brain, so that a random network marks half of it and
the round trip is compared voxel for voxel with the bundle's own run, in seconds on CPU; run with
``bash .ci/run-monailabel``.
"""

from __future__ import annotations

import json
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

from layouts_brats2020 import AFFINE, anatomy, synthesise, tumour_labels
from monailabel_server import download_app, infer, running_server
from neurobundles.zoo import bundle_parser, run_workflow
from neurobundles.zoo.packaging import export_bundle

pytestmark = [pytest.mark.monailabel, pytest.mark.slow]

BUNDLE = "segnet_brats2020_wholetumor"
SMALL = {"sw_batch_size": 16}
BOX = (slice(60, 156), slice(70, 166), slice(50, 90))
"""96 × 96 × 40 voxels of a BraTS grid holding brain and tumour: inference takes about a second."""


def _small_bundle(bundle_dir: Path, flair: Path) -> Path:
    """The exported bundle with a narrow network and seeded weights (it publishes none), cut at the median logit of
    the case's brain, so that the random network marks half of it."""
    configs = {name: bundle_dir / "configs" / f"{name}.json" for name in ("inference", "train")}
    for config_file in configs.values():
        config = json.loads(config_file.read_text())
        config["network_def"].update(channels=[4, 4, 8, 8, 8], kernel_size=3)
        config.update(SMALL)
        config_file.write_text(json.dumps(config, indent=4))
    torch.manual_seed(0)
    parser = bundle_parser(bundle_dir, output_threshold=None)
    network = parser.get_parsed_content("network_def").eval()
    (bundle_dir / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), bundle_dir / "models" / "model.pt")
    image = parser.get_parsed_content("preprocessing")({"image": str(flair)})["image"]
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(image[None], network)[0, 0]
    median = float(logits[image[0] > 0].median())
    for config_file in configs.values():
        config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"threshold": median}, indent=4))
    return bundle_dir


@pytest.fixture(scope="module")
def app(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MONAI Label's monaibundle sample app with the small, seeded bundle in its model folder."""
    root = tmp_path_factory.mktemp("monailabel")
    download_app(root)
    _small_bundle(export_bundle(BUNDLE, root / "monaibundle" / "model"), studies / "BraTS20_Training_002_flair.nii.gz")
    return root / "monaibundle"


def _write(path: Path, data: np.ndarray) -> Path:
    affine = AFFINE.copy()
    affine[:3, 3] = AFFINE[:3, :3] @ np.array([s.start for s in BOX]) + AFFINE[:3, 3]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[BOX]), affine), str(path))
    return path


@pytest.fixture(scope="module")
def studies(fsaverage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat studies folder: case 002's T1, T2, FLAIR (crops of a BraTS-layout case), and its FLAIR alone under
    another name (``lonely_flair``), whose T1 and T2 are not beside it."""
    folder = tmp_path_factory.mktemp("studies")
    anat = anatomy(str(fsaverage))
    rng = np.random.default_rng([0, 2, True])
    images = synthesise(anat, tumour_labels(anat, rng, 1.3), rng)
    for sequence in ("t1", "t2", "flair"):
        _write(folder / f"BraTS20_Training_002_{sequence}.nii.gz", images[sequence])
    _write(folder / "lonely_flair.nii.gz", images["flair"])
    return folder


@pytest.fixture(scope="module")
def server(app: Path, studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``monailabel start_server`` on 127.0.0.1 serving the bundle; yields (URL, log file)."""
    with running_server(app, studies, BUNDLE, tmp_path_factory) as (url, log):
        yield url, log


def test_server_lists_the_bundle_with_the_whole_tumour(server: tuple[str, Path]) -> None:
    with urllib.request.urlopen(f"{server[0]}/info/", timeout=30) as response:
        model = json.load(response)["models"][BUNDLE]
    assert model["labels"] == {"wholetumor": 1}


def test_server_finds_the_other_sequences_beside_the_flair_and_infers_what_the_bundle_does(
    server: tuple[str, Path], app: Path, studies: Path, tmp_path: Path
) -> None:
    served = infer(server[0], BUNDLE, "BraTS20_Training_002_flair", tmp_path / "served.nii.gz")
    flair = studies / "BraTS20_Training_002_flair.nii.gz"
    source = nib.load(str(flair))
    assert served.shape == source.shape and np.allclose(served.affine, source.affine, atol=1e-4)
    run_workflow(app / "model" / BUNDLE, dataset_dir=[str(flair)], output_dir=str(tmp_path / "bundle"))
    expected = np.asarray(nib.load(str(tmp_path / "bundle" / "BraTS20_Training_002_seg.nii.gz")).dataobj)
    labels = np.asarray(served.dataobj).astype(expected.dtype)
    assert set(np.unique(labels).tolist()) == {0, 1} and 0.2 < labels.mean() < 0.8
    assert (labels == expected).mean() >= 0.999


def test_sequences_named_in_the_request_are_used(server: tuple[str, Path], tmp_path: Path) -> None:
    beside = np.asarray(infer(server[0], BUNDLE, "BraTS20_Training_002_flair", tmp_path / "a.nii.gz").dataobj)
    params = {"t1": "BraTS20_Training_002_t1", "t2": "BraTS20_Training_002_t2"}
    named = np.asarray(infer(server[0], BUNDLE, "lonely_flair", tmp_path / "b.nii.gz", params).dataobj)
    assert np.array_equal(beside, named)  # lonely_flair is case 002's FLAIR under another name


def test_a_flair_without_its_sequences_is_refused_with_the_reason_in_the_log(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, log = server
    with pytest.raises(urllib.error.HTTPError):
        infer(url, BUNDLE, "lonely_flair", tmp_path / "c.nii.gz")
    expected = "lonely_flair.nii.gz: no t1 image of case lonely beside it"
    deadline = time.monotonic() + 30  # the server logs the traceback after answering
    while expected not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected in log.read_text()
    assert '{"t1": "<image id or path>"} in a MONAI Label request' in log.read_text()
