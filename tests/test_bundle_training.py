"""Every train.json runs with ``python -m monai.bundle run`` on data in the real folder layouts, then evaluate.json
scores the result: a few iterations on tiny volumes, on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO
from layouts import make_freesurfer, make_mindboggle
from neurobundles.labels import read_lut
from neurobundles.zoo import bundle_parser, bundle_path, run_workflow

MINDBOGGLE = ["meshnet_mindboggle_dkt31", "unet_mindboggle_dkt31"]
FREESURFER = ["meshnet_hcp_tissue", "meshnet_hcp_aparc104"]

SMALL = {
    "--volume_size": "32",
    "--roi_size": "[12,12,12]",
    "--crops_per_volume": "4",
    "--batch_size": "2",
    "--num_workers": "0",
    "--val_samples": "16",
}
"""Tiny volumes, crops and batches: the configs as shipped, scaled down to seconds on CPU."""

NARROW_UNET = {"--network_def#features": "[8,16,32,64]"}
"""The U-Net's 23 M parameters take seconds per step on CPU; its architecture is tested in test_unet.py."""


def _monai_bundle_run(config_files: list[Path], cwd: Path, **override: str) -> str:
    files = str([str(f) for f in config_files]) if len(config_files) > 1 else str(config_files[0])
    args = [arg for pair in override.items() for arg in pair]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *args]
    env = os.environ | {"PYTHONPATH": str(REPO / "common")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _configs(bundle: str, *names: str) -> list[Path]:
    return [bundle_path(bundle) / "configs" / f"{name}.json" for name in names]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "mindboggle": make_mindboggle(root / "Mindboggle101_volumes"),
        "freesurfer": make_freesurfer(root / "subjects"),
    }


@pytest.fixture(scope="module")
def trained(request, datasets, tmp_path_factory) -> tuple[str, Path, str]:
    """(bundle, run folder, log) after train.json: Mindboggle bundles from scratch, FreeSurfer ones fine-tuned."""
    bundle = request.param
    if bundle in FREESURFER:
        request.getfixturevalue("shared_data")  # the published weights come from the mirror
    run = tmp_path_factory.mktemp(bundle)
    layout = "mindboggle" if bundle in MINDBOGGLE else "freesurfer"
    log = _monai_bundle_run(
        _configs(bundle, "train"),
        run,
        **SMALL,
        **{
            "--dataset_dir": str(datasets[layout]),
            "--ckpt_dir": str(run / "models"),
            "--output_dir": str(run / "eval"),
            "--valid_fraction": "1",
            "--test_fraction": "1",
            "--max_epochs": "2" if bundle == "meshnet_mindboggle_dkt31" else "1",
        },
        **(NARROW_UNET if bundle.startswith("unet") else {}),
    )
    return bundle, run, log


EVERY = pytest.mark.parametrize("trained", MINDBOGGLE + FREESURFER, indirect=True)
FROM_SCRATCH = pytest.mark.parametrize("trained", MINDBOGGLE, indirect=True)


@EVERY
def test_training_writes_the_checkpoint_curves_tensorboard_logs_and_split(trained):
    _, run, _ = trained
    assert (run / "models" / "model.pt").is_file()
    assert (run / "eval" / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert list((run / "eval").glob("events.out.tfevents.*"))
    split = json.loads((run / "models" / "split.json").read_text())
    assert [len(split[name]) for name in ("valid", "test")] == [1, 1]


@EVERY
def test_trained_checkpoint_is_a_state_dict_of_network_def(trained):
    bundle, run, _ = trained
    parser = bundle_parser(bundle, "train")
    if bundle.startswith("unet"):
        parser["network_def#features"] = [8, 16, 32, 64]
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(run / "models" / "model.pt", weights_only=True), strict=True)


@EVERY
def test_training_logs_one_progress_line_per_epoch(trained):
    _, run, log = trained
    epochs = len(list(csv.DictReader((run / "eval" / "training_log.csv").open())))
    lines = [line for line in log.splitlines() if "neurobundles.training - INFO - epoch " in line]
    assert len(lines) == epochs and "val_mean_dice" in lines[-1]


@pytest.mark.parametrize("trained", ["meshnet_mindboggle_dkt31"], indirect=True)
def test_training_from_scratch_lowers_the_loss(trained):
    _, run, _ = trained
    losses = [float(row["loss"]) for row in csv.DictReader((run / "eval" / "training_log.csv").open())]
    assert losses[1] < 0.8 * losses[0]


@pytest.fixture(scope="module")
def evaluated(trained, datasets) -> tuple[str, Path]:
    """(bundle, output folder) after evaluate.json with the weights train.json wrote.

    The Mindboggle bundles' evaluate.json runs with ``python -m monai.bundle run``; the published bundles'
    one (tested in their own suites) runs in this process, conformed to 32³ instead of 256³ to stay fast.
    """
    bundle, run, _ = trained
    output = run / "test"
    override = {"ckpt_path": str(run / "models" / "model.pt"), "output_dir": str(output)}
    if bundle in MINDBOGGLE:
        override |= {"dataset_dir": str(datasets["mindboggle"]), "volume_size": "32", "roi_size": "[12,12,12]"}
        override |= {"num_samples": "16"} | (
            {"network_def#features": "[8,16,32,64]"} if bundle.startswith("unet") else {}
        )
        _monai_bundle_run(_configs(bundle, "inference", "evaluate"), run, **{f"--{k}": v for k, v in override.items()})
    else:
        transforms = json.loads((bundle_path(bundle) / "configs" / "inference.json").read_text())["image_transforms"]
        conform = next(i for i, t in enumerate(transforms) if t["_target_"].endswith("Conformd"))
        override |= {"dataset_dir": str(datasets["freesurfer"]), f"image_transforms#{conform}#size": 32}
        run_workflow(bundle, ["inference", "evaluate"], **override)
    return bundle, output


@EVERY
def test_evaluation_scores_the_subjects_held_out_for_testing(evaluated, trained):
    _, output = evaluated
    report = json.loads((output / "dice.json").read_text())
    assert list(report["cases"]) == json.loads((trained[1] / "models" / "split.json").read_text())["test"]
    assert 0.0 <= report["mean"] <= 1.0


@pytest.mark.parametrize("trained", [*MINDBOGGLE, "meshnet_hcp_tissue"], indirect=True)
def test_model_zoo_form_train_then_evaluate_scores_the_held_out_subjects(trained, datasets):
    """``--config_file "['configs/train.json','configs/evaluate.json']"``, as Model Zoo bundles document it."""
    bundle, run, _ = trained
    layout = "mindboggle" if bundle in MINDBOGGLE else "freesurfer"
    override = {"--dataset_dir": str(datasets[layout]), "--ckpt_dir": str(run / "models")}
    override |= {"--output_dir": str(run / "zoo_eval"), "--volume_size": "32", "--num_workers": "0"}
    if bundle in MINDBOGGLE:
        override |= {"--roi_size": "[12,12,12]", "--num_samples": "16"}
        override |= {"--network_def#features": "[8,16,32,64]"} if bundle.startswith("unet") else {}
    else:
        override |= {"--image_transforms#1#size": "32"}
    _monai_bundle_run(_configs(bundle, "train", "evaluate"), run, **override)
    report = json.loads((run / "zoo_eval" / "dice.json").read_text())
    assert list(report["cases"]) == json.loads((run / "models" / "split.json").read_text())["test"]


@FROM_SCRATCH
def test_evaluation_writes_label_maps_in_freesurfer_ids_of_both_hemispheres(evaluated):
    bundle, output = evaluated
    written = next(output.glob("*_seg.nii.gz"))
    values = set(np.unique(np.asarray(nib.load(str(written)).dataobj)).astype(int).tolist())
    allowed = set(read_lut(bundle_path(bundle) / "configs" / "labels.txt"))
    assert values <= allowed and any(v >= 2000 for v in values) and any(1000 <= v < 2000 for v in values)


@pytest.mark.slow
def test_multi_gpu_config_trains_with_torchrun_on_two_cpu_processes(datasets, tmp_path):
    """multi_gpu_train.json on gloo: both processes train their shard in step, rank 0 keeps the checkpoint."""
    bundle = "meshnet_mindboggle_dkt31"
    files = str([str(f) for f in _configs(bundle, "train", "multi_gpu_train")])
    override = SMALL | {
        "--dataset_dir": str(datasets["mindboggle"]),
        "--ckpt_dir": str(tmp_path / "models"),
        "--output_dir": str(tmp_path / "eval"),
        "--valid_fraction": "1",
        "--test_fraction": "1",
        "--max_epochs": "1",
    }
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run"]
    command += ["--config_file", files, *[arg for pair in override.items() for arg in pair]]
    env = os.environ | {"PYTHONPATH": str(REPO / "common")}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    network = bundle_parser(bundle, "train").get_parsed_content("network_def")
    network.load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True), strict=True)
    assert (result.stdout + result.stderr).count("neurobundles.training - INFO - epoch 1/1") == 1
