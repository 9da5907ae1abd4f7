"""The ``unet3d_iseg2017_tissue`` bundle end to end on the iSeg-2017 fixture: ``python -m monai.bundle run`` trains it
(the learning test: a few CPU epochs on one subject, then mean CSF/GM/WM Dice ≥ 0.8 on the held-out subject 1),
evaluates it (Dice, MHD, ASD per tissue), and ``neurobundles segment`` and the inference config segment subjects
given in any naming, recording bad subjects one by one.

The training run uses the shipped ``train.json`` with small settings (32³ sub-volumes, 4 base filters, Adam, 4 epochs
of 64 sub-volumes); the recipe's own values (SGD, 64³, 1024/128 sub-volumes, 200 epochs) are checked in the config.
Inference tests segment crops of a fixture subject, so that each takes about a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO
from layouts_iseg2017 import make_iseg2017, subject_arrays, write_analyze
from neurobundles.cli import main
from neurobundles.data import iseg_datalist
from neurobundles.engines import CohortFailedError
from neurobundles.outputs import read_failures
from neurobundles.zoo import bundle_parser, bundle_path, run_workflow

BUNDLE = "unet3d_iseg2017_tissue"

SMALL_NETWORK = {"network_def#init_filters": 4, "network_def#dropout": 0.0}
"""4 base filters instead of 8: a quarter of the work per voxel, and it still learns the fixture in 4 CPU epochs."""

SMALL_TRAINING = {
    "roi_size": "[32,32,32]",
    "batch_size": "2",
    "train_samples": "64",
    "val_samples": "16",
    "max_epochs": "4",
    "num_workers": "0",
    "threshold": "0.02",  # a 32³ crop cannot hold 10% of a brain's labelled voxels (64³ ones can)
    "optimizer": "{'_target_': 'torch.optim.Adam', 'params': '$@network.parameters()', 'lr': 0.003}",
}
"""train.json as shipped, scaled down to seconds per epoch on CPU."""

SMALL_INFERENCE = {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 8}

CROP = (slice(40, 104), slice(60, 140), slice(90, 170))
"""A 64×80×80 box of an iSeg grid holding brain and background: inference on it takes about a second."""


def _monai_bundle_run(config_files: list[Path], cwd: Path, **override: object) -> str:
    files = str([str(f) for f in config_files]) if len(config_files) > 1 else str(config_files[0])
    args = [arg for key, value in override.items() for arg in (f"--{key}", str(value))]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *args]
    env = os.environ | {"PYTHONPATH": str(REPO / "common"), "OMP_NUM_THREADS": "1"}  # small convolutions
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _configs(*names: str) -> list[Path]:
    return [bundle_path(BUNDLE) / "configs" / f"{name}.json" for name in names]


@pytest.fixture(scope="module")
def iseg_root(tmp_path_factory: pytest.TempPathFactory, fsaverage: Path) -> Path:
    """Training subjects 1–3 and testing subject 11 in the exact iSeg-2017 layout."""
    return make_iseg2017(tmp_path_factory.mktemp("iseg"), fsaverage.parent, training=(1, 2, 3), testing=(11,))


@pytest.fixture(scope="module")
def trained(iseg_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run folder, log) after ``python -m monai.bundle run`` of train.json: subject 1 held out, one trains."""
    run = tmp_path_factory.mktemp("run")
    override = {"dataset_dir": iseg_root, "ckpt_dir": run / "models", "output_dir": run / "eval"}
    log = _monai_bundle_run(_configs("train"), run, **override, **SMALL_TRAINING, **SMALL_NETWORK)
    return run, log


@pytest.fixture(scope="module")
def evaluated(trained: tuple[Path, str], iseg_root: Path) -> Path:
    """The Model Zoo form ``[train, evaluate]``: the checkpoint train.json wrote, scored on the held-out subject."""
    run, _ = trained
    override = {"dataset_dir": iseg_root, "ckpt_dir": run / "models", "output_dir": run / "test"}
    override |= {"roi_size": "[32,32,32]", "inferer": "@non_overlapping_inferer", "sw_batch_size": "8"}
    _monai_bundle_run(_configs("train", "evaluate"), run, **override, **SMALL_NETWORK)
    return run / "test"


@pytest.fixture(scope="module")
def trained_bundle(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle holding the trained weights, its configs set to the small network and windows."""
    run, _ = trained
    copy = tmp_path_factory.mktemp("bundles") / BUNDLE
    shutil.copytree(bundle_path(BUNDLE), copy, ignore=shutil.ignore_patterns("models", "eval"))
    (copy / "models").mkdir()
    shutil.copy(run / "models" / "model.pt", copy / "models" / "model.pt")
    for name in ("inference", "train"):
        config_file = copy / "configs" / f"{name}.json"
        config = json.loads(config_file.read_text())
        config["network_def"].update(init_filters=4, dropout=0.0)
        config.update(SMALL_INFERENCE)
        config_file.write_text(json.dumps(config, indent=4))
    return copy


def _crop(volume: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(volume[CROP])


def _nifti(path: Path, data: np.ndarray, zoom: float = 1.0) -> Path:
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = -40.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture(scope="module")
def cohort(iseg_root: Path, fsaverage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of crops of fixture subjects in several namings, three of them unusable:

    subject-21 (iSeg naming, Analyze), sub-24 (BIDS naming, NIfTI, its T2 at 2 mm on another grid), and the bad
    ones: subject-22 (no T2), subject-23 (a 4D T2) and sub-25 (a 2D T1). ``pair/`` holds a subject named freely.
    """
    root = tmp_path_factory.mktemp("cohort")
    folder = root / "subjects"
    t1, t2, label = (_crop(a) for a in subject_arrays(fsaverage.parent, 11))
    write_analyze(folder / "subject-21-T1.img", t1), write_analyze(folder / "subject-21-T2.img", t2)
    write_analyze(folder / "subject-22-T1.img", t1)
    write_analyze(folder / "subject-23-T1.img", t1)
    nib.AnalyzeImage(np.stack([t2, t2], axis=-1), None).to_filename(str(folder / "subject-23-T2.hdr"))
    _nifti(folder / "sub-24_T1w.nii.gz", t1)
    coarse = t2.reshape(32, 2, 40, 2, 40, 2).mean(axis=(1, 3, 5)).astype(np.int16)
    _nifti(folder / "sub-24_T2w.nii.gz", coarse, zoom=2.0)
    _nifti(folder / "sub-25_T1w.nii.gz", t1[:, :, 40:41]), _nifti(folder / "sub-25_T2w.nii.gz", t2[:, :, 40:41])
    _nifti(root / "pair" / "anat_a.nii.gz", t1), _nifti(root / "pair" / "anat_b.nii.gz", t2)
    training = root / "training"  # an iSeg-named training folder of crops; subject-22's label has a wrong value
    for number in (21, 22):
        (
            write_analyze(training / f"subject-{number}-T1.img", t1),
            write_analyze(training / f"subject-{number}-T2.img", t2),
        )
        wrong = label.copy()
        if number == 22:
            wrong[30, 40, 40] = 77
        write_analyze(training / f"subject-{number}-label.img", wrong)
    return root


@contextmanager
def _cohort_failure(count: int) -> Iterator[None]:
    """The run ends with :class:`CohortFailedError` for ``count`` inputs (MONAI wraps it: finalize raises it)."""
    with pytest.raises(Exception) as raised:
        yield
    seen: BaseException | None = raised.value
    while seen is not None and not isinstance(seen, CohortFailedError):
        seen = seen.__cause__ or seen.__context__
    assert seen is not None, f"not a cohort failure: {raised.value!r}"
    assert str(seen).startswith(f"{count} input(s) could not be segmented"), str(seen)


# ---------------------------------------------------------------- the recipe as configured


def test_train_config_holds_the_seed_recipe() -> None:
    parser = bundle_parser(BUNDLE, "train")
    assert parser["roi_size"] == [64, 64, 64] and parser["threshold"] == 0.1
    assert (parser["train_samples"], parser["val_samples"], parser["batch_size"]) == (1024, 128, 4)
    assert parser["max_epochs"] == 200 and parser["test_subjects"] == ["subject-1"]
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 1e-8)
    loss = parser.get_parsed_content("loss")
    assert loss.include_background and loss.squared_pred and loss.batch and loss.softmax and not loss.sigmoid
    parser["loss_activation"] = "sigmoid"  # the seed's own normalisation
    sigmoid = parser.get_parsed_content("loss", lazy=False)
    assert sigmoid.sigmoid and not sigmoid.softmax


def test_training_without_data_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(Exception) as raised:  # MONAI wraps what the initialize step raised
        run_workflow(BUNDLE, "train", "train", ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"))
    cause = raised.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert "nothing to train on: no --dataset_dir was given. Pass --dataset_dir /path/to/iSeg-2017" in str(cause)
    assert not (tmp_path / "models" / "split.json").exists()


def test_monai_vnet_is_selectable_in_the_config() -> None:
    network = bundle_parser(BUNDLE, "inference", network_def="@vnet_def").get_parsed_content("network")
    assert type(network).__name__ == "VNet"
    with torch.no_grad():
        assert network.eval()(torch.zeros(1, 2, 32, 32, 32)).shape == (1, 4, 32, 32, 32)


# ---------------------------------------------------------------- training and evaluation


@pytest.mark.slow
def test_training_writes_the_checkpoint_the_split_and_per_class_curves(trained: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, log = trained
    split = json.loads((run / "models" / "split.json").read_text())
    assert split["test"] == ["subject-1"] and sorted(split["train"] + split["valid"]) == ["subject-2", "subject-3"]
    network = bundle_parser(BUNDLE, "train", **SMALL_NETWORK).get_parsed_content("network_def")
    network.load_state_dict(torch.load(run / "models" / "model.pt", weights_only=True), strict=True)
    assert (run / "eval" / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    events = EventAccumulator(str(run / "eval"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"{kind}_dice_{c}" for kind in ("val", "train") for c in ("CSF", "GM", "WM")} <= tags
    assert len(events.Scalars("val_dice_GM")) == 4  # one point per epoch
    assert log.count("neurobundles.training - INFO - epoch ") == 4


@pytest.mark.slow
def test_learning_reaches_dice_0_8_on_the_held_out_subject(evaluated: Path) -> None:
    """The learning test: trained on one subject for 4 CPU epochs, it segments another (subject 1, the mirrored
    brain) with mean CSF/GM/WM Dice ≥ 0.8."""
    report = json.loads((evaluated / "metrics.json").read_text())
    assert list(report["cases"]) == ["subject-1"]
    dice = [report["cases"]["subject-1"][f"dice_{c}"] for c in ("CSF", "GM", "WM")]
    print(f"held-out Dice CSF/GM/WM {np.round(dice, 3)}, mean {np.mean(dice):.3f}")
    assert np.mean(dice) >= 0.8, dice


@pytest.mark.slow
def test_evaluation_reports_dice_mhd_and_asd_per_tissue(evaluated: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    header, *rows = (evaluated / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    assert {f"{m}_{c}" for m in ("dice", "mhd", "asd") for c in ("CSF", "GM", "WM")} <= set(columns)
    assert [row.split(",")[0] for row in rows] == ["subject-1", "mean"]
    case = json.loads((evaluated / "metrics.json").read_text())["cases"]["subject-1"]
    assert 0 < case["asd_GM"] < case["mhd_GM"] <= case["hd_GM"]
    events = EventAccumulator(str(evaluated))
    events.Reload()
    assert {"test_dice_WM", "test_mhd_CSF", "test_asd_GM"} <= set(events.Tags()["scalars"])
    assert (evaluated / "subject-1_seg.nii.gz").is_file() and (evaluated / "subject-1_volumes.csv").is_file()


@pytest.mark.slow
def test_a_label_map_with_wrong_values_fails_alone(trained_bundle: Path, cohort: Path, tmp_path: Path) -> None:
    datalist = iseg_datalist(cohort / "training")
    with _cohort_failure(1):  # the run ends by reporting its failures, after scoring the others
        run_workflow(trained_bundle, ["inference", "evaluate"], datalist=datalist, output_dir=str(tmp_path))
    failures = read_failures(tmp_path)
    assert [f["id"] for f in failures] == ["subject-22"]
    assert "subject-22-label.img: label values 77 (1 voxel) are not iSeg-2017 label values" in failures[0]["reason"]
    assert json.loads((tmp_path / "metrics.json").read_text())["cases"].keys() == {"subject-21"}


# ---------------------------------------------------------------- inference


@pytest.mark.slow
def test_segment_command_takes_any_naming_and_isolates_bad_subjects(
    trained_bundle: Path, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pair = f"{cohort / 'pair' / 'anat_a.nii.gz'},{cohort / 'pair' / 'anat_b.nii.gz'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            ["segment", str(cohort / "subjects"), pair, "--bundle", str(trained_bundle), "--output", str(tmp_path)]
        )
    assert code == 1
    reasons = {f["id"]: f["reason"] for f in read_failures(tmp_path)}
    assert set(reasons) == {"subject-22", "subject-23", "sub-25"}
    assert "no T2 image found beside this T1 (looked for subject-22-T2.img" in reasons["subject-22"]
    assert "subject-23-T2.img: is 4D with 2 volumes" in reasons["subject-23"]
    assert "sub-25_T1w.nii.gz: is 2D" in reasons["sub-25"]
    assert "3 input(s) could not be segmented" in capsys.readouterr().err
    for ident, t1 in (("subject-21", "subjects/subject-21-T1.img"), ("sub-24", "subjects/sub-24_T1w.nii.gz")):
        written, source = nib.load(str(tmp_path / f"{ident}_seg.nii.gz")), nib.load(str(cohort / t1))
        assert written.shape == source.shape[:3] and np.allclose(written.affine, source.affine, atol=1e-4)
        values = np.asarray(written.dataobj)
        assert set(np.unique(values).tolist()) == {0, 1, 2, 3}
        assert (tmp_path / f"{ident}_qc.png").is_file() and (tmp_path / f"{ident}_volumes.csv").is_file()
    assert (tmp_path / "anat_a_seg.nii.gz").is_file()
    table = (tmp_path / "volumes.csv").read_text().splitlines()
    assert table[0] == "id,EstimatedTotalBrainVolume,CSF,GM,WM,warnings" and len(table) == 4


@pytest.mark.slow
def test_both_inference_modes_and_the_submission_format(trained_bundle: Path, cohort: Path, tmp_path: Path) -> None:
    t1 = cohort / "subjects" / "subject-21-T1.img"
    sliding, patches = tmp_path / "sliding", tmp_path / "patches"
    run_workflow(trained_bundle, "inference", dataset_dir=[str(t1)], output_dir=str(sliding))
    run_workflow(
        trained_bundle,
        "inference",
        dataset_dir=[str(t1)],
        output_dir=str(patches),
        inferer="@non_overlapping_inferer",
        iseg_submission=True,
    )
    by_window, by_patch = (np.asarray(nib.load(str(d / "subject-21_seg.nii.gz")).dataobj) for d in (sliding, patches))
    brain = (by_window > 0) | (by_patch > 0)
    assert (by_window == by_patch)[brain].mean() > 0.85  # two ways to tile one network's work
    submission = nib.load(str(patches / "subject-21-label.img"))
    assert isinstance(submission, nib.AnalyzeImage) and not isinstance(submission, nib.Nifti1Pair)
    assert submission.shape == (*by_patch.shape, 1) and submission.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(submission.dataobj)[..., 0], np.array([0, 10, 150, 250])[by_patch])
    assert not (sliding / "subject-21-label.img").exists()  # the submission format only when asked


@pytest.mark.slow
def test_t2_on_another_grid_can_be_refused_per_subject(trained_bundle: Path, cohort: Path, tmp_path: Path) -> None:
    inputs = [str(cohort / "subjects" / "sub-24_T1w.nii.gz"), str(cohort / "subjects" / "subject-21-T1.img")]
    with _cohort_failure(1):
        run_workflow(trained_bundle, "inference", dataset_dir=inputs, output_dir=str(tmp_path), t2_grid="refuse")
    (failure,) = read_failures(tmp_path)
    assert (
        failure["id"] == "sub-24" and "sub-24_T2w.nii.gz: grid (32, 40, 40) at [2.0, 2.0, 2.0] mm" in failure["reason"]
    )
    assert (tmp_path / "subject-21_seg.nii.gz").is_file()


@pytest.mark.slow
def test_bench_times_both_modes_and_training(trained: tuple[Path, str], cohort: Path) -> None:
    from neurobundles.tools.bench_iseg import benchmark, format_report

    run, _ = trained
    report = benchmark(
        str(cohort / "subjects" / "subject-21-T1.img"),
        repeats=1,
        train_steps=1,
        ckpt_path=str(run / "models" / "model.pt"),
        roi_size=[32, 32, 32],
        overlap=0.25,
        batch_size=2,
        **SMALL_NETWORK,
    )
    assert set(report["inference"]) == {"sliding_window_inferer", "non_overlapping_inferer"}
    assert all(v["seconds"] > 0 and v["cpu_seconds"] > 0 for v in report["inference"].values())
    assert report["mode_agreement"] > 0.85 and report["size"]["parameters"] == 445_656
    assert report["training"]["step_subvolumes_per_s"] > 0 and report["training"]["sampler_subvolumes_per_s"] > 0
    assert "non-overlapping 32³ patches (MedicalZoo)" in format_report(report)
