"""The ``segnet_brats2020_wholetumor`` bundle end to end on BraTS 2020 cases in the exact Kaggle layout (built from
fsaverage with synthetic gliomas).

``python -m monai.bundle run`` trains it on case 002 with small settings — a narrow SegNet on slices resampled to
3 mm (80² instead of 240²), Adam — and is killed with SIGKILL after iteration 25; the same command started again
resumes from the checkpoint of iteration 20 and finishes the run (the learning test: whole-tumour Dice ≥ 0.8 on the
training case in its own grid). ``[train, evaluate]`` scores it (Dice, HD95, sensitivity, specificity per case and
mean); ``neurobundles segment`` segments case folders and a case given in RAS instead of LPS, each mask in its
input's grid, a broken case recorded on its own; ``[train, finetune]`` transfers the weights to a second task
(lateral ventricles on T1) with the encoder frozen. The recipe's own values are checked in the configs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO
from layouts_brats2020 import make_brats2020, make_mask_task
from neurobundles.cli import main
from neurobundles.data import brats_datalist
from neurobundles.engines.resume import checkpoint_iteration, interval_checkpoints
from neurobundles.outputs import read_failures
from neurobundles.zoo import bundle_parser, bundle_path, run_workflow

BUNDLE = "segnet_brats2020_wholetumor"
INNER = "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"

SMALL = {"network_def#channels": [16, 16, 32, 32, 32], "pixdim": [3.0, 3.0, 0.0]}
"""A SegNet of the seed's shape with 16–32 channels per level (477,217 parameters instead of 81.7 M) on slices
resampled to 3 mm in-plane (80² for BraTS's 240²): about 0.3 s per training step of 10 slices on one CPU core."""

SMALL_TRAINING = {
    "max_epochs": 6,
    "skip_empty": True,
    "tumour_repeats": 2,
    "num_workers": 0,
    "checkpoint_interval": 10,
    "preview_interval": 50,
    "optimizer": "{'_target_': 'torch.optim.Adam', 'params': '$[p for p in @network.parameters() if p.requires_grad]', "
    "'lr': 0.006}",
}
"""train.json as shipped, scaled to seconds per epoch: every brain slice of one case once and its tumour slices twice
(24 steps of 10 per epoch), 6 epochs, Adam (the seed's SGD needs far more steps to get there: it reached Dice
0.74–0.80 in 250 steps on the same case)."""

KILL_AFTER = 25
"""The first training process kills itself (SIGKILL) after this iteration; checkpoints are every 10."""


def _monai_bundle_run(config_files: list[Path], cwd: Path, **override: object) -> subprocess.CompletedProcess:
    files = str([str(f) for f in config_files]) if len(config_files) > 1 else str(config_files[0])
    args = [arg for key, value in override.items() for arg in (f"--{key}", _arg(value))]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *args]
    env = os.environ | {"PYTHONPATH": str(REPO / "common"), "OMP_NUM_THREADS": "1"}  # small convolutions
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def _arg(value: object) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _configs(*names: str, root: Path | None = None) -> list[Path]:
    return [(root or bundle_path(BUNDLE)) / "configs" / f"{name}.json" for name in names]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def brats(fsaverage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training cases 001 and 002 and validation case 001 of the Kaggle download."""
    return make_brats2020(tmp_path_factory.mktemp("brats2020"), fsaverage.parent, training=2, validation=1)


@pytest.fixture(scope="module")
def trained(brats: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train on case 002 (001 held out for testing), kill the process after iteration 25, run it again."""
    run = tmp_path_factory.mktemp("run")
    lists = run / "lists.json"
    lists.write_text(json.dumps({"train": ["BraTS20_Training_002"], "valid": [], "test": ["BraTS20_Training_001"]}))
    override = {"dataset_dir": brats, "ckpt_dir": run / "models", "output_dir": run / "eval", "split_file": lists}
    override |= SMALL | SMALL_TRAINING
    steps = list(bundle_parser(BUNDLE, "train")["run"])
    kill = (
        f"$@train#trainer.add_event_handler(monai.engines.workflow.Events.ITERATION_COMPLETED(once={KILL_AFTER}), "
        "lambda engine: os.kill(os.getpid(), 9))"
    )
    killer = run / "kill.json"  # the shipped run steps with a SIGKILL after iteration 25 before the trainer starts
    killer.write_text(json.dumps({"run": [*steps[:-1], kill, steps[-1]]}))
    killed = _monai_bundle_run([*_configs("train"), killer], run, **override)
    saved = [iteration for iteration, _ in interval_checkpoints(run / "models")]
    events = {p.name for p in (run / "eval").glob("events.out.tfevents.*")}
    resumed = _monai_bundle_run(_configs("train"), run, **override)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    new_events = sorted(p for p in (run / "eval").glob("events.out.tfevents.*") if p.name not in events)
    return {"run": run, "killed": killed, "saved_before": saved, "resumed": resumed, "events": new_events}


@pytest.fixture(scope="module")
def trained_bundle(trained: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle holding the trained weights, its configs set to the small network and 3 mm slices."""
    copy = tmp_path_factory.mktemp("bundles") / BUNDLE
    shutil.copytree(bundle_path(BUNDLE), copy, ignore=shutil.ignore_patterns("models", "eval", "finetuned"))
    (copy / "models").mkdir()
    shutil.copy(trained["run"] / "models" / "model.pt", copy / "models" / "model.pt")
    for name in ("inference", "train"):
        config_file = copy / "configs" / f"{name}.json"
        config = json.loads(config_file.read_text())
        config["network_def"]["channels"] = SMALL["network_def#channels"]
        config["pixdim"] = SMALL["pixdim"]
        config_file.write_text(json.dumps(config, indent=4))
    return copy


@pytest.fixture(scope="module")
def segmented(trained_bundle: Path, brats: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``neurobundles segment`` on a folder holding case 002 and a case without its T2."""
    inputs = tmp_path_factory.mktemp("inputs")
    shutil.copytree(brats / INNER / "BraTS20_Training_002", inputs / "BraTS20_Training_002")
    broken = inputs / "BraTS20_Training_009"
    broken.mkdir()
    for sequence in ("t1", "flair"):
        shutil.copy(
            brats / INNER / "BraTS20_Training_001" / f"BraTS20_Training_001_{sequence}.nii",
            broken / f"BraTS20_Training_009_{sequence}.nii",
        )
    output = tmp_path_factory.mktemp("segmented")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["segment", str(inputs), "--bundle", str(trained_bundle), "--output", str(output)])
    return {"inputs": inputs, "output": output, "code": code}


# ---------------------------------------------------------------- the recipe as configured


def test_train_config_holds_the_seed_recipe_with_its_defects_fixed() -> None:
    parser = bundle_parser(BUNDLE, "train")
    assert (parser["batch_size"], parser["max_epochs"], parser["checkpoint_interval"]) == (10, 10, 100)
    assert parser["modalities"] == ["t1", "t2", "flair"] and parser["normalise"] == "minmax"
    assert parser["skip_empty"] is False and parser["tumour_repeats"] == 1  # every slice, as the seed (which lost one)
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.SGD)
    assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]) == (0.01, 0.9)
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, torch.nn.BCEWithLogitsLoss) and loss.pos_weight.tolist() == [25.0]
    network = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in network.parameters()) == 81_745_409
    assert network(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)  # logits: the loss applies the sigmoid
    assert parser.get_parsed_content("threshold") == pytest.approx(math.log(25))
    inference = bundle_parser(BUNDLE, "inference").get_parsed_content("network_def")
    assert inference.two_classes and inference.threshold == pytest.approx(
        math.log(25)
    )  # [ln 25, z]: argmax = z > ln 25


def test_device_is_chosen_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from neurobundles.zoo import auto_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert auto_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert auto_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert auto_device() == torch.device("cuda", 1)
    assert "auto_device" in bundle_parser(BUNDLE, "train")["device"]


# ---------------------------------------------------------------- training: kill, resume, learn


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_checkpoint_and_continues_the_iteration_count(trained: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained["run"]
    assert trained["killed"].returncode == -9, trained["killed"].stderr[-2000:]
    assert trained["saved_before"] == [20, 10]  # the interval checkpoints written before the kill
    log = trained["resumed"].stdout + trained["resumed"].stderr
    assert "resumed from " in log and "checkpoint_iteration=20.pt: 20 iterations done, continuing epoch 1 of 6" in log
    final = interval_checkpoints(run / "models")[0][1]
    state = torch.load(final, weights_only=True)["trainer"]
    epoch_length = state["epoch_length"]
    steps = []
    for events_file in trained["events"]:
        events = EventAccumulator(str(events_file))
        events.Reload()
        if "train_loss" in events.Tags()["scalars"]:
            steps = [event.step for event in events.Scalars("train_loss")]
    assert steps[0] == 21 and steps[-1] == 6 * epoch_length  # continued at 21, not restarted at 1
    assert steps == list(range(21, 6 * epoch_length + 1))
    assert checkpoint_iteration(final) == 6 * epoch_length - (6 * epoch_length) % 10
    split = json.loads((run / "models" / "split.json").read_text())
    assert split == {"train": ["BraTS20_Training_002"], "valid": [], "test": ["BraTS20_Training_001"]}
    for picture in ("training_preview.png", "training_curves.png"):
        assert (run / "eval" / picture).read_bytes().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def evaluated(trained: dict, brats: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``[train, evaluate]`` on the checkpoint train.json wrote, over both training cases (002 trained on)."""
    output = tmp_path_factory.mktemp("test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_workflow(
            BUNDLE,
            ["train", "evaluate"],
            datalist=brats_datalist(brats, label=True),
            ckpt_dir=str(trained["run"] / "models"),
            output_dir=str(output),
            **SMALL,
        )
    finally:
        torch.set_num_threads(threads)
    return output


@pytest.mark.slow
def test_learning_reaches_whole_tumour_dice_0_8_on_the_training_case(evaluated: Path) -> None:
    """The learning test: after 6 short epochs (one resumed after the kill), case 002's whole tumour, segmented in
    its own 1 mm grid, has Dice ≥ 0.8."""
    report = json.loads((evaluated / "metrics.json").read_text())
    case = report["cases"]["BraTS20_Training_002"]
    print(f"training case: {case}; held-out case: {report['cases']['BraTS20_Training_001']}")
    assert case["dice"] >= 0.8, case


@pytest.mark.slow
def test_evaluation_writes_dice_hd95_sensitivity_specificity_per_case_and_mean(evaluated: Path) -> None:
    header, *rows = (evaluated / "metrics.csv").read_text().splitlines()
    assert header == "id,dice,hd95,sensitivity,specificity"
    assert [row.split(",")[0] for row in rows] == ["BraTS20_Training_001", "BraTS20_Training_002", "mean"]
    values = {row.split(",")[0]: [float(v) for v in row.split(",")[1:]] for row in rows}
    for dice, hd95, sensitivity, specificity in values.values():
        assert 0 <= dice <= 1 and 0 <= hd95 <= 373.2 and 0 <= sensitivity <= 1 and 0.9 <= specificity <= 1
    assert values["mean"][0] == pytest.approx(np.mean([values[c][0] for c in values if c != "mean"]), abs=1e-4)
    assert (evaluated / "BraTS20_Training_002_seg.nii.gz").is_file()


# ---------------------------------------------------------------- inference


@pytest.mark.slow
def test_segment_writes_the_mask_in_the_input_grid_and_the_tumour_volume(segmented: dict, brats: Path) -> None:
    output = segmented["output"]
    assert segmented["code"] == 1  # the broken case failed, alone
    (failure,) = read_failures(output)
    assert failure["id"] == "BraTS20_Training_009"
    assert "no t2 image of case BraTS20_Training_009 beside it" in failure["reason"]
    case = brats / INNER / "BraTS20_Training_002"
    written, source = (
        nib.load(str(output / "BraTS20_Training_002_seg.nii.gz")),
        nib.load(str(case / "BraTS20_Training_002_t1.nii")),
    )
    assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-4)
    mask = np.asarray(written.dataobj)
    truth = np.asarray(nib.load(str(case / "BraTS20_Training_002_seg.nii")).dataobj) > 0
    assert set(np.unique(mask).tolist()) == {0, 1}
    rows = {
        row.split(",")[1]: row.split(",")
        for row in (output / "BraTS20_Training_002_volumes.csv").read_text().splitlines()
    }
    assert float(rows["WholeTumor"][3]) == pytest.approx(mask.sum(), rel=1e-6)  # 1 mm³ voxels
    assert float(rows["WholeTumor"][3]) == pytest.approx(truth.sum(), rel=0.25)
    assert 1000e3 < float(rows["EstimatedTotalBrainVolume"][3]) < 2000e3  # the skull-stripped input's brain
    assert (output / "BraTS20_Training_002_qc.png").read_bytes().startswith(b"\x89PNG")
    table = (output / "volumes.csv").read_text().splitlines()
    assert table[0] == "id,EstimatedTotalBrainVolume,WholeTumor,warnings" and len(table) == 2


@pytest.mark.slow
def test_a_second_run_skips_cases_already_segmented(segmented: dict, trained_bundle: Path) -> None:
    before = (segmented["output"] / "BraTS20_Training_002_summary.json").stat().st_mtime_ns
    inputs = str(segmented["inputs"] / "BraTS20_Training_002")
    assert main(["segment", inputs, "--bundle", str(trained_bundle), "--output", str(segmented["output"])]) == 0
    assert (segmented["output"] / "BraTS20_Training_002_summary.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_input_in_another_orientation_gets_its_mask_in_its_own_grid(
    segmented: dict, brats: Path, trained_bundle: Path, tmp_path: Path
) -> None:
    """A case stored RAS (not BraTS's LPS) is reoriented for the network and its mask returned in RAS: the same
    mask, voxel for voxel, as the LPS original's."""
    case = tmp_path / "ras" / "case7"
    case.mkdir(parents=True)
    for sequence in ("t1", "t2", "flair"):
        image = nib.load(str(brats / INNER / "BraTS20_Training_002" / f"BraTS20_Training_002_{sequence}.nii"))
        nib.save(nib.as_closest_canonical(image), str(case / f"case7_{sequence}.nii.gz"))
    assert nib.aff2axcodes(nib.load(str(case / "case7_t1.nii.gz")).affine) == ("R", "A", "S")
    output = tmp_path / "out"
    assert (
        main(["segment", str(case / "case7_flair.nii.gz"), "--bundle", str(trained_bundle), "--output", str(output)])
        == 0
    )
    written = nib.load(str(output / "case7_seg.nii.gz"))
    source = nib.load(str(case / "case7_t1.nii.gz"))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-4)
    lps = nib.load(str(segmented["output"] / "BraTS20_Training_002_seg.nii.gz"))
    back = nib.orientations.apply_orientation(
        np.asarray(written.dataobj),
        nib.orientations.ornt_transform(nib.io_orientation(written.affine), nib.io_orientation(lps.affine)),
    )
    assert np.array_equal(back, np.asarray(lps.dataobj))


# ---------------------------------------------------------------- transfer learning


@pytest.mark.slow
def test_finetuning_on_a_second_task_keeps_the_frozen_encoder(
    trained_bundle: Path, fsaverage: Path, tmp_path: Path, one_thread: None
) -> None:
    """``[train, finetune]`` loads the BraTS weights, trains the decoder on lateral ventricles (T1 only, LIA, not
    skull-stripped) and leaves every encoder weight and batch-norm statistic as BraTS left them; ``[inference,
    finetune]`` then segments the task's images with the fine-tuned weights."""
    task = make_mask_task(tmp_path / "ventricles", fsaverage.parent)
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle, bundle)
    override = {"dataset_dir": str(task), "max_epochs": 1, "valid_fraction": 0, "test_fraction": 0}
    override |= {"num_workers": 0, "pixdim": [2.0, 2.0, 0.0], "preview_interval": 0}
    run_workflow(bundle, ["train", "finetune"], **override)
    brats = torch.load(bundle / "models" / "model.pt", weights_only=True)
    tuned = torch.load(bundle / "finetuned" / "model.pt", weights_only=True)
    assert brats.keys() == tuned.keys()
    encoder = [key for key in brats if key.startswith("encoder.")]
    assert len(encoder) == 91 and all(torch.equal(brats[key], tuned[key]) for key in encoder)
    assert any(not torch.equal(brats[key], tuned[key]) for key in brats if key.startswith("decoder."))
    assert json.loads((bundle / "finetuned" / "split.json").read_text())["train"] == ["fsaverage", "fsaverage_xhemi"]

    run_workflow(bundle, ["inference", "finetune"], dataset_dir=[str(task / "images")], pixdim=[2.0, 2.0, 0.0])
    output = bundle / "eval_finetuned"
    image = nib.load(str(task / "images" / "fsaverage.nii.gz"))
    written = nib.load(str(output / "fsaverage_seg.nii.gz"))
    assert written.shape == image.shape and np.allclose(written.affine, image.affine, atol=1e-4)
    assert (output / "volumes.csv").read_text().splitlines()[0] == "id,target,warnings"
