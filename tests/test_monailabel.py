"""MONAI Label's monaibundle app serves our bundles from a local folder, and its trainer accepts our train configs.

Needs MONAI Label, which needs torchvision, so these run in their own environment: ``bash .ci/run-monailabel``.
Elsewhere the module is skipped.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("monailabel", reason="MONAI Label is not installed here; run bash .ci/run-monailabel")

from monailabel_server import download_app, running_server
from neurobundles.labels import read_lut
from neurobundles.zoo import bundle_names, bundle_parser, bundle_path, bundle_remote_files, load_metadata, run_workflow
from neurobundles.zoo.packaging import export_bundle

pytestmark = [pytest.mark.monailabel, pytest.mark.slow]

BUNDLES = [name for name in bundle_names() if bundle_remote_files(bundle_path(name))]
"""Bundles with published weights: MONAI Label serves them. The others are trained first (``TRAINABLE``); bundles
of other inputs (T1+T2, BraTS sequences) have their own round trip in tests/test_monailabel_<dataset>.py."""


def _t1_input(name: str) -> bool:
    """A bundle whose input is one T1-weighted MRI channel: the studies below (fsaverage) fit its train.json."""
    return load_metadata(name)["network_data_format"]["inputs"]["image"]["channel_def"] == {"0": "T1w"}


TRAINABLE = [
    name for name in bundle_names() if (bundle_path(name) / "configs" / "train.json").is_file() and _t1_input(name)
] or [pytest.param(None, marks=pytest.mark.skip(reason="no bundle has configs/train.json yet"))]


@pytest.fixture(scope="module")
def app(tmp_path_factory, shared_data) -> Path:
    """MONAI Label's monaibundle sample app with every bundle exported into its model folder."""
    root = tmp_path_factory.mktemp("monailabel")
    download_app(root)
    for name in bundle_names():
        export_bundle(name, root / "monaibundle" / "model")
    return root / "monaibundle"


@pytest.fixture(scope="module")
def server(app, t1_crop, tmp_path_factory) -> Iterator[str]:
    """``monailabel start_server`` on 127.0.0.1 over a studies folder holding a real T1; yields its URL."""
    studies = tmp_path_factory.mktemp("studies")
    shutil.copy(t1_crop, studies / "t1_crop.nii.gz")
    with running_server(app, studies, ",".join(BUNDLES), tmp_path_factory) as (url, _log):
        yield url


def _info(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/info/", timeout=30) as response:
        return json.load(response)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_server_lists_each_bundle_with_its_labels(server, bundle):
    model = _info(server)["models"][bundle]
    channel_def = load_metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"]
    expected = {name.lower(): int(value) for value, name in channel_def.items() if name.lower() != "background"}
    assert model["labels"] == expected
    assert model["version"] == load_metadata(bundle)["version"]


# Every bundle is listed above; the full inference round trip runs for one bundle that writes class indices and
# one that writes FreeSurfer ids split by hemisphere (the others take the same path with other weights).
INFERRED = ["meshnet_hcp_tissue", "meshnet_hcp_subcortical"]


@pytest.mark.parametrize("bundle", INFERRED)
def test_server_infers_the_same_label_map_as_the_bundle(server, bundle, t1_crop, tmp_path):
    request = urllib.request.Request(f"{server}/infer/{bundle}?image=t1_crop&output=image", method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        (tmp_path / "label.nii.gz").write_bytes(response.read())
    label = nib.load(str(tmp_path / "label.nii.gz"))
    source = nib.load(str(t1_crop))
    assert label.shape == source.shape and np.allclose(label.affine, source.affine, atol=1e-4)

    run_workflow(bundle, datalist=[{"image": str(t1_crop), "id": "t1_crop"}], output_dir=str(tmp_path / "bundle"))
    expected = np.asarray(nib.load(str(tmp_path / "bundle" / "t1_crop_seg.nii.gz")).dataobj)
    served = np.asarray(label.dataobj).astype(expected.dtype)
    assert set(np.unique(served)) <= set(read_lut(bundle_path(bundle) / "configs" / "labels.txt"))  # values written
    assert (served == expected).mean() >= 0.999


# --- training path ------------------------------------------------------------------------------


def _fine_tune_config(network_def: dict) -> dict:
    """A minimal train.json wired like ours: ``network`` from ``network_def``, data, epochs and device overridable."""
    transforms = [
        {"_target_": "LoadImaged", "keys": ["image", "label"], "reader": "NibabelReader", "ensure_channel_first": True},
        {"_target_": "neurobundles.transforms.MapLabelsd", "keys": "label", "mapping": "@label_map"},
        {"_target_": "ScaleIntensityd", "keys": "image"},
        {"_target_": "RandSpatialCropd", "keys": ["image", "label"], "roi_size": [32, 32, 32], "random_size": False},
    ]  # fmt: skip
    dataset = {"_target_": "Dataset", "data": [], "transform": {"_target_": "Compose", "transforms": transforms}}
    return {
        "imports": ["$import neurobundles"],
        "bundle_root": ".",
        "label_map": "$neurobundles.labels.tissue_map(white=1, grey=2)",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "train": {
            "dataset": dataset,
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 1, "num_workers": 0},
            "handlers": [
                {
                    "_target_": "CheckpointSaver",
                    "save_dir": "$@bundle_root + '/models'",
                    "save_dict": {"model": "@network"},
                    "save_final": True,
                    "final_filename": "model.pt",
                }
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@device",
                "max_epochs": 100,
                "train_data_loader": "@train#dataloader",
                "network": "@network",
                "loss_function": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
                "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
                "train_handlers": "@train#handlers",
            },
        },
        "validate": {"dataset": dataset},
        "run": ["$@train#trainer.run()"],
    }


@pytest.fixture
def labelled_studies(tmp_path, fsaverage) -> Path:
    """A MONAI Label studies folder with one labelled image (fsaverage, as NIfTI)."""
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for name, target in (
        ("orig.mgz", studies / "fsaverage.nii.gz"),
        ("aparc+aseg.mgz", studies / "labels" / "final" / "fsaverage.nii.gz"),
    ):
        image = nib.load(str(fsaverage / "mri" / name))
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), str(target))
    return studies


def _train_with_monailabel(bundle_dir: Path, studies: Path) -> None:
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    task = BundleTrainTask(str(bundle_dir), {})
    assert task.is_valid()
    datastore = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    task({"model": bundle_dir.name, "max_epochs": 1, "val_split": 0.0, "device": "cpu", "multi_gpu": False}, datastore)


def _assert_retrained(bundle_dir: Path, before: dict[str, torch.Tensor] | None) -> None:
    """``models/model.pt`` loads into ``network_def`` and differs from ``before`` (None: the bundle had no weights)."""
    after = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)
    network_def = bundle_parser(bundle_dir).get_parsed_content("network_def")
    network_def.load_state_dict(after, strict=True)
    if before is not None:
        assert any(not torch.equal(before[key], after[key]) for key in before), "model.pt was not retrained"


def _small_training(bundle_dir: Path) -> None:
    """Scale the copy's train.json down (fewer, smaller crops) so one epoch on a 256³ brain takes seconds on CPU."""
    train = bundle_dir / "configs" / "train.json"
    config = json.loads(train.read_text())
    config.update(crops_per_volume=4, batch_size=2, roi_size=[16, 16, 16])
    train.write_text(json.dumps(config, indent=4))


def test_trainer_fine_tunes_a_bundle_through_a_train_config(app, labelled_studies, tmp_path):
    bundle_dir = export_bundle(app / "model" / BUNDLES[0], tmp_path / "bundles")
    network_def = json.loads((bundle_dir / "configs" / "inference.json").read_text())["network_def"]
    (bundle_dir / "configs" / "train.json").write_text(json.dumps(_fine_tune_config(network_def), indent=4))
    before = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)
    _train_with_monailabel(bundle_dir, labelled_studies)
    _assert_retrained(bundle_dir, before)


@pytest.mark.parametrize("bundle", TRAINABLE)
def test_trainer_accepts_the_bundles_train_config(app, labelled_studies, bundle, tmp_path):
    bundle_dir = export_bundle(app / "model" / bundle, tmp_path / "bundles")
    _small_training(bundle_dir)
    checkpoint = bundle_dir / "models" / "model.pt"
    before = torch.load(checkpoint, weights_only=True) if checkpoint.is_file() else None
    _train_with_monailabel(bundle_dir, labelled_studies)
    _assert_retrained(bundle_dir, before)
