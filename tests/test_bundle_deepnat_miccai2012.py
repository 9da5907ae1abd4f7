"""The ``deepnat_miccai2012_anatomy`` bundle end to end on the MICCAI 2012 fixture (``tests/layouts_miccai2012.py``,
real FreeSurfer anatomy at 3 mm): ``python -m monai.bundle run`` trains stage 1 and then stage 2 into one checkpoint
(the learning test: mean Dice ≥ 0.7 on the training subject's 25 structures), evaluates both stages with and
without the CRF, and segments a testing image in its own grid with Neuromorphometrics ids; dense inference with
the trained weights equals the per-patch network.

The training runs use the shipped ``train.json`` with a narrow network (4/16/16 convolutions, 256/128 fully
connected), Adam and a few thousand patches; the recipe's own values are checked in the config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from conftest import REPO
from layouts_miccai2012 import make_miccai2012
from neurobundles.data.miccai2012 import CLASS_NAMES, OUTPUT_IDS, brain_mask_from_labels, structure_map
from neurobundles.errors import InvalidImageError
from neurobundles.inferers import DeepNATInferer
from neurobundles.metrics import class_dice
from neurobundles.networks import DeepNATCascade, load_pretrained
from neurobundles.networks.deepnat import dense_logits, patch_logits
from neurobundles.transforms import BrainMaskd, LoadVolumed, MapLabels
from neurobundles.zoo import bundle_parser, bundle_path

BUNDLE = "deepnat_miccai2012_anatomy"

SMALL_NETWORK = {"channels": "[4,16,16]", "fc_channels": "[256,128]", "dropout": "0.0"}
"""The released topology with narrow layers: it learns the 3 mm fixture in a few hundred steps on CPU."""

SMALL_TRAINING = {
    "patches_per_draw": "1280",
    "val_samples": "512",
    "batch_size": "128",
    "num_workers": "0",
    "optimizer": "{'_target_': 'torch.optim.Adam', 'params': '$@stage_network.parameters()', 'lr': 0.01}",
}
STAGES = {1: {"train_samples": "3840", "max_epochs": "1"}, 2: {"train_samples": "8960", "max_epochs": "5"}}
"""Stage 1: 30 steps of 128 patches; stage 2: 350."""


def _monai_bundle_run(config_files: list[Path], cwd: Path, **override: object) -> str:
    files = str([str(f) for f in config_files]) if len(config_files) > 1 else str(config_files[0])
    args = [arg for key, value in override.items() for arg in (f"--{key}", str(value))]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *args]
    env = os.environ | {"PYTHONPATH": str(REPO / "common")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _configs(*names: str) -> list[Path]:
    return [bundle_path(BUNDLE) / "configs" / f"{name}.json" for name in names]


def _classes(labels: np.ndarray) -> np.ndarray:
    return MapLabels(structure_map())(labels)


@pytest.fixture(scope="module")
def miccai(tmp_path_factory: pytest.TempPathFactory, fsaverage: Path) -> Path:
    """Training 1000 (fsaverage) and 1001 (fsaverage_xhemi), testing 1003 (fsaverage), at 3 mm."""
    return make_miccai2012(tmp_path_factory.mktemp("miccai2012"), fsaverage.parent, training=2, testing=1, downsample=3)


@pytest.fixture(scope="module")
def trained(miccai: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str]]:
    """(run folder, log per stage): stage 1, then stage 2 into the same ``models/model.pt``; 1001 validates."""
    run = tmp_path_factory.mktemp("run")
    split = run / "lists.json"
    split.write_text(json.dumps({"train": ["1000"], "valid": ["1001"]}))
    override = {"dataset_dir": miccai, "split_file": split, "ckpt_dir": run / "models", "output_dir": run / "eval"}
    logs = {}
    for stage, settings in STAGES.items():
        logs[stage] = _monai_bundle_run(
            _configs("train"), run, stage=stage, **override, **SMALL_TRAINING, **settings, **SMALL_NETWORK
        )
        (run / "models" / f"after_stage{stage}.pt").write_bytes((run / "models" / "model.pt").read_bytes())
    return run, logs


@pytest.fixture(scope="module")
def cascade(trained: tuple[Path, dict[int, str]]) -> DeepNATCascade:
    parser = bundle_parser(BUNDLE, "inference", **{k: json.loads(v) for k, v in SMALL_NETWORK.items()})
    return load_pretrained(parser.get_parsed_content("network_def"), trained[0] / "models" / "model.pt").eval()


@pytest.fixture(scope="module")
def evaluated(trained: tuple[Path, dict[int, str]], miccai: Path) -> Path:
    """``[train, evaluate]`` on the training split (1000 trained on, 1001 held out), vote and CRF."""
    run, _ = trained
    override = {"dataset_dir": miccai, "eval_split": "training", "ckpt_dir": run / "models", "output_dir": run / "test"}
    _monai_bundle_run(_configs("train", "evaluate"), run, **override, **SMALL_NETWORK)
    return run / "test"


def test_train_config_holds_the_paper_recipe() -> None:
    parser = bundle_parser(BUNDLE, "train")
    assert parser.get_parsed_content("patch_size") == 23 and parser.get_parsed_content("num_heads") == 7
    assert parser.get_parsed_content("channels") == [32, 64, 64]
    assert parser.get_parsed_content("fc_channels") == [1024, 512] and parser.get_parsed_content("dropout") == 0.5
    assert parser["optimizer"]["_target_"] == "torch.optim.SGD"
    network = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in network.stage2.parameters()) == 2_770_742


def test_training_normalises_and_places_images_as_inference_does() -> None:
    """The intensity and coordinate transforms have the same settings in training and inference; only the brain
    mask's source differs (the labels in training)."""

    def steps(config: str, key: str) -> list[dict]:
        targets = ("neurobundles.transforms.MaskPercentileScaled", "neurobundles.transforms.CoordinateMapsd")
        transforms = json.loads((bundle_path(BUNDLE) / "configs" / f"{config}.json").read_text())[key]
        return [t for t in transforms if t["_target_"] in targets]

    assert steps("train", "volume_transforms") == steps("inference", "image_transforms")
    assert len(steps("train", "volume_transforms")) == 2


def test_both_stages_train_into_one_checkpoint(trained: tuple[Path, dict[int, str]]) -> None:
    run, logs = trained
    after1 = torch.load(run / "models" / "after_stage1.pt", map_location="cpu")
    after2 = torch.load(run / "models" / "after_stage2.pt", map_location="cpu")
    after1, after2 = (state.get("model", state) for state in (after1, after2))
    stage1 = [k for k in after2 if k.startswith("stage1.")]
    stage2 = [k for k in after2 if k.startswith("stage2.") and k.endswith("weight")]
    assert stage1 and all(torch.equal(after1[k], after2[k]) for k in stage1)  # stage 2's run kept stage 1
    assert all(not torch.equal(after1[k], after2[k]) for k in stage2)
    for stage in (1, 2):
        assert "val_accuracy" in logs[stage]
    assert json.loads((run / "models" / "split.json").read_text())["valid"] == ["1001"]
    assert (run / "eval" / "training_curves.png").stat().st_size > 0


def test_overfit_reaches_mean_dice_0_7_on_the_training_subject(evaluated: Path) -> None:
    vote = json.loads((evaluated / "dice_vote.json").read_text())["cases"]
    crf = json.loads((evaluated / "dice_crf.json").read_text())["cases"]
    print(
        f"mean Dice, vote: 1000 {vote['1000']['mean_dice']:.3f}, 1001 {vote['1001']['mean_dice']:.3f}; "
        f"CRF: 1000 {crf['1000']['mean_dice']:.3f}, 1001 {crf['1001']['mean_dice']:.3f}"
    )
    assert vote["1000"]["mean_dice"] >= 0.7


def test_evaluation_reports_every_structure_and_writes_neuromorphometrics_ids(evaluated: Path, miccai: Path) -> None:
    header = (evaluated / "dice_crf.csv").read_text().splitlines()[0].split(",")
    assert header == ["id", *(f"dice_{name}" for name in CLASS_NAMES[1:]), "mean_dice"]
    written = nib.load(str(evaluated / "1000_seg.nii.gz"))
    image = nib.load(str(miccai / "training-images" / "1000_3.nii.gz"))
    assert written.shape == image.shape and np.allclose(written.affine, image.affine)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= set(OUTPUT_IDS)


def test_inference_segments_a_testing_image_in_its_grid(
    trained: tuple[Path, dict[int, str]], miccai: Path, tmp_path: Path
) -> None:
    """The inference config on a folder holding the image and its brain mask (``<id>_3_mask.nii.gz``)."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = nib.load(str(miccai / "testing-images" / "1003_3.nii.gz"))
    nib.save(image, str(inputs / "1003_3.nii.gz"))
    truth = np.asarray(nib.load(str(miccai / "testing-labels" / "1003_3_glm.nii.gz")).dataobj)
    nib.save(nib.Nifti1Image(brain_mask_from_labels(truth).astype(np.uint8), image.affine), inputs / "1003_3_mask.nii")
    run, _ = trained
    override = {"dataset_dir": inputs, "ckpt_path": run / "models" / "model.pt", "output_dir": tmp_path / "out"}
    _monai_bundle_run(_configs("inference"), run, **override, **SMALL_NETWORK)
    written = nib.load(str(tmp_path / "out" / "1003_3_seg.nii.gz"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*_seg.nii.gz")) == ["1003_3_seg.nii.gz"]  # not the mask
    assert written.shape == image.shape and np.allclose(written.affine, image.affine)
    dice = class_dice(_classes(np.asarray(written.dataobj)), _classes(truth), CLASS_NAMES)["mean_dice"]
    assert dice >= 0.6
    assert (tmp_path / "out" / "1003_3_qc.png").stat().st_size > 0
    assert "Left-Hippocampus" in (tmp_path / "out" / "volumes.csv").read_text()


@pytest.mark.slow
def test_dense_equals_per_patch_with_trained_weights(cascade: DeepNATCascade, miccai: Path) -> None:
    """The trained stage 2 (batch-norm statistics from training) on 500 brain voxels of the testing subject."""
    data = bundle_parser(BUNDLE, "train").get_parsed_content("volume_transforms")
    item = {"image": str(miccai / "testing-images" / "1003_3.nii.gz")}
    item["label"] = str(miccai / "testing-labels" / "1003_3_glm.nii.gz")
    for transform in data:
        item = transform(item)
    image, coords = item["image"].as_tensor(), item["coords"].as_tensor()
    centres = torch.nonzero(item["mask"][0].as_tensor())
    dense = dense_logits(cascade.stage2, image, coords, centres)
    subset = torch.randperm(len(centres), generator=torch.Generator().manual_seed(2))[:500]
    reference = patch_logits(cascade.stage2, image, coords, centres[subset])
    assert (dense[subset].max(1).indices == reference.max(1).indices).float().mean() >= 0.999
    assert (torch.softmax(dense[subset], 1) - torch.softmax(reference, 1)).abs().max() < 1e-4
    inputs = torch.cat([image, coords, item["mask"].as_tensor()])[None]
    block = torch.zeros_like(inputs[:, -1:])
    centre = centres.float().mean(0).long()
    block[(0, 0, *(slice(int(c) - 4, int(c) + 4) for c in centre))] = 1
    inputs = torch.cat([inputs[:, :-1], inputs[:, -1:] * block], 1)
    assert (
        DeepNATInferer("dense")(inputs, cascade) == DeepNATInferer("patch")(inputs, cascade)
    ).float().mean() >= 0.999


# --- brain masks ----------------------------------------------------------------------------------------------


def _loaded(path: Path) -> dict:
    return LoadVolumed("image")({"image": str(path)})


class _Threshold(torch.nn.Module):
    """A stand-in brain-extraction network: class 1 where the (conformed, 0..1) image exceeds ``level``."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.level - x, x - self.level], 1)


def test_model_mask_returns_to_the_image_grid(fsaverage: Path, tmp_path: Path) -> None:
    """The model path conforms a copy (here a 2 mm, RAS image), segments and resamples back: the mask matches
    the same threshold applied in the image's own grid."""
    brain = nib.load(str(fsaverage / "mri" / "brainmask.mgz"))
    values = np.asarray(brain.dataobj, dtype=np.float32)[::2, ::2, ::2]
    ras = nib.as_closest_canonical(nib.Nifti1Image(values, brain.affine @ np.diag([2.0, 2.0, 2.0, 1.0])))
    nib.save(ras, str(tmp_path / "brain.nii.gz"))
    data = _loaded(tmp_path / "brain.nii.gz")
    out = BrainMaskd("image", source="model", network=_Threshold(0.05))(data)
    mask = out["mask"]
    assert isinstance(mask, MetaTensor) and mask.shape == data["image"].shape
    assert np.allclose(mask.affine, data["image"].affine)
    expected = np.asarray(ras.dataobj) > 0
    got = mask[0].numpy() > 0
    assert 2 * (got & expected).sum() / (got.sum() + expected.sum()) >= 0.95


def test_mask_sources_file_beside_and_nonzero(fsaverage: Path, tmp_path: Path) -> None:
    brain = nib.load(str(fsaverage / "mri" / "brainmask.mgz"))
    values = np.asarray(brain.dataobj)[::4, ::4, ::4]
    affine = brain.affine @ np.diag([4.0, 4.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(values, affine), str(tmp_path / "t1.nii.gz"))
    nonzero = BrainMaskd("image", source="nonzero")(_loaded(tmp_path / "t1.nii.gz"))["mask"][0].numpy() > 0
    assert nonzero.sum() > 0.9 * (values > 0).sum()
    with pytest.raises(InvalidImageError, match="no brain mask file"):
        BrainMaskd("image", source="file")(_loaded(tmp_path / "t1.nii.gz"))
    half = np.zeros(values.shape, dtype=np.uint8)
    half[: values.shape[0] // 2] = values[: values.shape[0] // 2] > 0
    nib.save(nib.Nifti1Image(half, affine), str(tmp_path / "t1_mask.nii.gz"))
    auto = BrainMaskd("image", network=_Threshold(2.0))(_loaded(tmp_path / "t1.nii.gz"))  # the file wins
    assert (auto["mask"][0].numpy() > 0).sum() == pytest.approx(half.sum(), rel=0.05)
    nib.save(nib.Nifti1Image(half[1:], affine), str(tmp_path / "t1_mask.nii.gz"))
    with pytest.raises(InvalidImageError, match="differs from"):
        BrainMaskd("image", source="file")(_loaded(tmp_path / "t1.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros_like(values), affine), str(tmp_path / "empty.nii.gz"))
    with pytest.raises(InvalidImageError, match="empty"):
        BrainMaskd("image", source="nonzero")(_loaded(tmp_path / "empty.nii.gz"))
