"""The MTNeuro Task 2 bundles end to end: ``python -m monai.bundle run`` training on data the real ``intern`` client
fetched from a loopback BossDB, evaluation with smp's metric definitions, inference of cutouts, ``fetch-mtneuro``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from bossdb_emulator import BossDBEmulator, intern_environment, task2_cache
from conftest import REPO
from neurobundles.cli import main
from neurobundles.data.mtneuro import MTNeuroDataset, load_task
from neurobundles.engines import CohortFailedError
from neurobundles.metrics.pixels import get_stats, mtneuro_report
from neurobundles.networks import MTNeuroUNet, build_network
from neurobundles.networks.smp import SMP_ARCHITECTURES
from neurobundles.zoo import bundle_parser, bundle_path, run_workflow

BUNDLE_2D, BUNDLE_3D = "mtneuro_task2_unet2d", "mtneuro_task2_unet3d"
SMALL_2D, SMALL_3D = [16, 32, 64, 128], [8, 16, 32, 64]
"""Narrower U-Nets (``--network_def#channels``) keep the CPU runs short; the bundles default to 32-64-128-256."""
VAL = "z380-409"  # the validation cutouts' file names hold their z range


@pytest.fixture(scope="session")
def task2(tmp_path_factory):
    """The Task 2 cutouts, fetched once through ``intern`` from a loopback BossDB (shared with the data tests)."""
    return task2_cache(tmp_path_factory.mktemp("mtneuro"))


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs on one thread, like the training subprocesses: these small convolutions gain little from a
    second one, and multi-threaded operators stall badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def boss():
    with BossDBEmulator() as emulator:
        yield emulator


def _cache_without_validation(task2, target: Path) -> Path:
    """A copy of the cache missing the validation cutouts, which a run then fetches itself."""
    shutil.copytree(task2["cache"], target, ignore=shutil.ignore_patterns(f"*{VAL}*"))
    return target


def _monai_bundle_run(bundle: str, boss: BossDBEmulator, run: Path, *args: str) -> str:
    """``python -m monai.bundle run`` of a bundle's train.json with ``intern`` pointed at the emulator (INTERN_*
    variables, a HOME without ~/.intern); returns the log."""
    home = run / "home"
    home.mkdir(parents=True)
    env = os.environ | {
        "INTERN_PROTOCOL": "http",
        "INTERN_HOST": boss.host,
        "INTERN_TOKEN": boss.token,
        "HOME": str(home),
        "OMP_NUM_THREADS": "1",  # small convolutions: a second thread gains little and stalls on a busy machine
        "PYTHONPATH": str(REPO / "common"),
    }
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle_path(bundle) / "configs" / "train.json"),
        "--ckpt_dir", str(run / "models"), "--output_dir", str(run / "eval"), "--num_workers", "0", *args,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=run, env=env, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return log


@pytest.fixture(scope="module")
def trained_2d(task2, boss, tmp_path_factory) -> dict:
    """The 2D bundle trained on the 4-class task: Adam with a linearly decaying learning rate on Dice + cross-entropy,
    synchronised flips and rotations, 12 epochs of 13 batches of 8 random 64 × 64 crops (every 8th training slice);
    validated at the end on every 15th validation slice, which the run downloads itself."""
    run = tmp_path_factory.mktemp("train2d")
    cache = _cache_without_validation(task2, run / "cache")
    before = len(boss.cutout_requests())
    log = _monai_bundle_run(
        BUNDLE_2D, boss, run,
        "--task", "task2_2D_4class", "--cache_dir", str(cache),
        "--train_stride", "8", "--val_stride", "15", "--train_roi", "[64, 64]", "--augment_prob", "0.5",
        "--max_epochs", "12", "--val_interval", "12", "--optimizer", "@adam", "--loss", "@dice_ce_loss",
        "--lr_end_factor", "0.01", "--network_def#channels", json.dumps(SMALL_2D),
    )  # fmt: skip
    return {"run": run, "cache": cache, "log": log, "fetched": boss.cutout_requests()[before:]}


def _metrics(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())["mean"]


# ---------------------------------------------------------------------------------------------------------------
# Task variants are configuration, the task files ship with the bundles
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bundle", "task", "classes", "dims"),
    [
        (BUNDLE_2D, None, ["background", "vessel", "cell", "axon"], 2),
        (BUNDLE_2D, "task2_2D_3class", ["background_axon", "vessel", "cell"], 2),
        (BUNDLE_3D, None, ["background", "vessel", "cell", "axon"], 3),
        (BUNDLE_3D, "task2_3D_3class", ["background_axon", "vessel", "cell"], 3),
    ],
)
def test_class_count_is_a_task_override(bundle, task, classes, dims):
    override = {"task": task} if task else {}
    parser = bundle_parser(bundle, "train", **override)
    assert parser.get_parsed_content("label_names") == {str(i): name for i, name in enumerate(classes)}
    network = parser.get_parsed_content("network_def")
    shape = (1, 1, 32, 32) if dims == 2 else (1, 1, 32, 32, 8)
    assert network(torch.rand(shape)).shape[1] == len(classes)
    task_def = parser.get_parsed_content("task_def")
    assert (task_def.spatial_dims, Path(task_def.source).parent) == (dims, bundle_path(bundle) / "configs" / "tasks")


def test_a_task_file_given_by_path_is_used(tmp_path):
    spec = json.loads((bundle_path(BUNDLE_2D) / "configs" / "tasks" / "task2_2D_3class.json").read_text())
    spec.update(name="two_regions", regions={k: spec["regions"][k] for k in ("cortex", "vp")})
    (tmp_path / "two_regions.json").write_text(json.dumps(spec))
    parser = bundle_parser(BUNDLE_2D, "train", task=str(tmp_path / "two_regions.json"))
    assert parser.get_parsed_content("task_def").sample_count("test") == 100


def test_only_the_2d_bundle_offers_the_smp_architectures():
    assert bundle_parser(BUNDLE_2D, "inference").get_parsed_content("architecture") == "mtneuro_unet"
    assert "architecture" not in bundle_parser(BUNDLE_3D, "inference").get()
    with pytest.raises(ValueError, match="2D segmentation-models-pytorch model"):
        build_network("manet", spatial_dims=3)


@pytest.mark.skipif(
    importlib.util.find_spec("segmentation_models_pytorch") is not None,
    reason="segmentation-models-pytorch is installed here (tests/test_torchvision_smp.py covers it)",
)
def test_an_smp_architecture_without_smp_says_how_to_install():
    assert set(SMP_ARCHITECTURES) >= {"unetplusplus", "manet", "fpn", "pan", "pspnet", "linknet", "deeplabv3plus"}
    with pytest.raises(ImportError, match=r"pip install segmentation-models-pytorch==0\.6\.0"):
        build_network("manet")
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what a component raises
        bundle_parser(BUNDLE_2D, "inference", architecture="manet").get_parsed_content("network_def")
    assert isinstance(raised.value.__cause__, ImportError)


# ---------------------------------------------------------------------------------------------------------------
# 2D: training through monai.bundle run, evaluation, inference
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_2d_training_overfits_the_loopback_data(trained_2d):
    report = _metrics(trained_2d["run"] / "eval" / "validation" / "metrics.json")
    print(f"2D validation after 156 steps: {report}")
    assert report["f1/foreground"] >= 0.8, report
    assert (trained_2d["run"] / "models" / "model.pt").is_file()
    # the run fetched the validation cutouts itself, through intern, from the loopback server
    assert len(trained_2d["fetched"]) == 6 and all("/380:409/" in path for path in trained_2d["fetched"])


@pytest.mark.slow
def test_2d_training_writes_metrics_to_csv_tensorboard_and_curves(trained_2d):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    eval_dir = trained_2d["run"] / "eval"
    header = (eval_dir / "validation" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("accuracy/axon", "balanced_accuracy_no_background", "f1/vessel", "f1/mean", "iou/cell", "iou/mean"):
        assert column in header
    assert len((eval_dir / "training_log.csv").read_text().splitlines()) == 1 + 12
    assert (eval_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    tags = set()
    for events in eval_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train_loss", "val_mean_f1", "val_f1/cell", "val_iou/mean", "val_balanced_accuracy_no_background"} <= tags


@pytest.mark.slow
def test_2d_evaluation_reports_the_smp_scores_of_the_test_split(trained_2d, tmp_path):
    overrides = {"network_def#channels": SMALL_2D, "cache_dir": str(trained_2d["cache"]), "offline": True}
    run_workflow(
        BUNDLE_2D, ["train", "evaluate"], "eval", ckpt_dir=str(trained_2d["run"] / "models"),
        output_dir=str(tmp_path), eval_stride=10, **overrides,
    )  # fmt: skip
    reported = _metrics(tmp_path / "metrics_test.json")
    # the same scores computed here from smp-style counts of the same network on the same test images
    network = MTNeuroUNet(2, 1, 4, channels=SMALL_2D)
    network.load_state_dict(torch.load(trained_2d["run"] / "models" / "model.pt", weights_only=True))
    network.eval()
    dataset = MTNeuroDataset("task2_2D_4class", "test", trained_2d["cache"], offline=True, sample_stride=10)
    counts = []
    with torch.no_grad():
        for item in dataset:
            prediction = network(torch.as_tensor(item["image"])[None]).argmax(1)
            counts.append(get_stats(prediction, torch.as_tensor(item["label"]), 4))
    expected = mtneuro_report(*(torch.cat(c) for c in zip(*counts)), class_names=load_task("task2_2D_4class").classes)
    assert len(json.loads((tmp_path / "metrics_test.json").read_text())["cases"]) == len(dataset) == 15  # 150 / 10
    for key, value in expected.items():
        if "_pooled/" not in key:
            assert reported[key] == pytest.approx(value, abs=1e-6), key
    assert reported["f1/foreground"] >= 0.8


def _cutouts(cache: Path, folder: Path) -> dict[str, np.ndarray]:
    """Test-split cutouts of the cortex cube in every input format; returns the true labels of each, as stored."""
    region = "x4600-4856_y900-1156_z420-470_r0.npy"
    image = np.load(cache / "prasad" / "prasad2020" / f"image_{region}")  # [z, y, x]
    labels = np.load(cache / "prasad" / "prasad_analysis" / f"pixel_labels_{region}")
    folder.mkdir()
    np.save(folder / "stack.npy", image[:3])
    np.save(folder / "slice.npy", image[5, :200, :184])
    pages = [Image.fromarray(page) for page in image[10:12, 16:216, 8:248]]
    pages[0].save(folder / "pages.tif", save_all=True, append_images=pages[1:])
    affine = np.diag([1.17e-3, 1.17e-3, 1.17e-3, 1.0])
    nib.save(nib.Nifti1Image(np.moveaxis(image[20:22], 0, -1), affine), str(folder / "volume.nii.gz"))  # [y, x, z]
    return {
        "stack": labels[:3],
        "slice": labels[5, :200, :184],
        "pages": labels[10:12, 16:216, 8:248],
        "volume": np.moveaxis(labels[20:22], 0, -1),
    }


@pytest.mark.slow
def test_segment_command_writes_label_maps_like_their_inputs(trained_2d, tmp_path):
    copy = tmp_path / BUNDLE_2D  # the bundle as its user leaves it after training
    shutil.copytree(bundle_path(BUNDLE_2D), copy, ignore=shutil.ignore_patterns("models", "eval"))
    (copy / "models").mkdir()
    shutil.copy(trained_2d["run"] / "models" / "model.pt", copy / "models" / "model.pt")
    config = json.loads((copy / "configs" / "inference.json").read_text())
    config["network_def"]["channels"] = SMALL_2D
    (copy / "configs" / "inference.json").write_text(json.dumps(config))
    truth = _cutouts(trained_2d["cache"], tmp_path / "in")

    assert main(["segment", str(tmp_path / "in"), "--bundle", str(copy), "--output", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    written = {
        "stack": np.load(out / "stack_seg.npy"),
        "slice": np.load(out / "slice_seg.npy"),
        "volume": np.asarray(nib.load(str(out / "volume_seg.nii.gz")).dataobj),
    }
    with Image.open(out / "pages_seg.tif") as tiff:
        written["pages"] = np.stack([np.asarray(page) for page in ImageSequence.Iterator(tiff)])
    for name, labels in written.items():
        assert labels.shape == truth[name].shape and labels.dtype == np.uint8, name
        assert (labels == truth[name]).mean() >= 0.95, name
    volume = nib.load(str(out / "volume_seg.nii.gz"))
    assert (
        np.allclose(volume.affine, np.diag([1.17e-3, 1.17e-3, 1.17e-3, 1.0]))
        and volume.header.get_intent()[0] == "label"
    )
    fractions = (out / "stack_fractions.csv").read_text().splitlines()
    assert fractions[0] == "class,name,pixels,fraction" and len(fractions) == 5
    assert sum(float(row.split(",")[3]) for row in fractions[1:]) == pytest.approx(1.0, abs=1e-5)
    summary = json.loads((out / "pages_summary.json").read_text())
    assert summary["outputs"] == {"labels": "pages_seg.tif", "fractions": "pages_fractions.csv", "qc": "pages_qc.png"}
    table = (out / "fractions.csv").read_text().splitlines()
    assert table[0] == "id,background,vessel,cell,axon,warnings" and len(table) == 5
    assert (out / "stack_qc.png").read_bytes()[:4] == b"\x89PNG" and (out / "qc_sheet.png").is_file()
    # a second run finds every cutout complete and rewrites nothing
    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*_seg.*")}
    assert main(["segment", str(tmp_path / "in"), "--bundle", str(copy), "--output", str(out)]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*_seg.*")} == stamps


@pytest.mark.slow
def test_a_broken_cutout_fails_alone(trained_2d, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "good.npy", np.random.default_rng(0).integers(0, 255, (1, 64, 64), dtype=np.uint8))
    (folder / "broken.npy").write_bytes(b"not an array")
    np.save(folder / "labels.npy", np.zeros((2, 64, 64), bool))
    with pytest.raises(Exception) as raised:
        run_workflow(
            BUNDLE_2D, dataset_dir=[str(folder)], output_dir=str(tmp_path / "out"),
            ckpt_path=str(trained_2d["run"] / "models" / "model.pt"), **{"network_def#channels": SMALL_2D},
        )  # fmt: skip
    cause = raised.value
    while cause is not None and not isinstance(cause, CohortFailedError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, CohortFailedError) and "2 input(s) could not be segmented" in str(cause)
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert "broken.npy: cannot be read as a npy cutout" in failures and "holds a bool array" in failures
    assert np.load(tmp_path / "out" / "good_seg.npy").shape == (1, 64, 64)


# ---------------------------------------------------------------------------------------------------------------
# 3D: trains, evaluates, infers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_3d_bundle_trains_evaluates_and_infers(task2, boss, tmp_path):
    run = tmp_path / "train3d"
    log = _monai_bundle_run(
        BUNDLE_3D, boss, run,
        "--task", "task2_3D_3class", "--cache_dir", str(task2["cache"]), "--offline", "true",
        "--train_stride", "10", "--val_stride", "8", "--train_roi", "[48, 48, 8]", "--batch_size", "2",
        "--max_epochs", "2", "--optimizer", "@adam", "--loss", "@dice_ce_loss", "--augment_prob", "0.5",
        "--network_def#channels", json.dumps(SMALL_3D),
    )  # fmt: skip
    assert "epoch 2/2" in log and (run / "models" / "model.pt").is_file()
    assert len((run / "eval" / "training_log.csv").read_text().splitlines()) == 3
    overrides = {"network_def#channels": SMALL_3D, "task": "task2_3D_3class", "cache_dir": str(task2["cache"])}
    run_workflow(
        BUNDLE_3D, ["train", "evaluate"], "eval", ckpt_dir=str(run / "models"), output_dir=str(run / "test"),
        offline=True, eval_stride=7, **overrides,
    )  # fmt: skip
    report = json.loads((run / "test" / "metrics_test.json").read_text())
    assert len(report["cases"]) == 4 and set(report["mean"]) >= {"f1/background_axon", "f1/vessel", "f1/cell"}
    assert all(0.0 <= value <= 1.0 for value in report["mean"].values())

    (tmp_path / "in").mkdir()
    cutout = np.load(Path(task2["cache"]) / "prasad" / "prasad2020" / "image_x3700-3956_y500-756_z420-470_r0.npy")
    np.save(tmp_path / "in" / "striatum.npy", cutout[:11, :72, :64])  # 11 slices: a window and a half
    run_workflow(
        BUNDLE_3D, dataset_dir=[str(tmp_path / "in")], output_dir=str(tmp_path / "out"),
        ckpt_path=str(run / "models" / "model.pt"), **overrides,
    )  # fmt: skip
    labels = np.load(tmp_path / "out" / "striatum_seg.npy")
    assert labels.shape == (11, 72, 64) and set(np.unique(labels)) <= {0, 1, 2}


# ---------------------------------------------------------------------------------------------------------------
# Pre-fetching a task
# ---------------------------------------------------------------------------------------------------------------
def test_fetch_mtneuro_prefetches_a_task_once(tmp_path, capsys):
    with BossDBEmulator() as emulator, intern_environment(emulator.host, emulator.token, tmp_path / "home"):
        arguments = [
            "fetch-mtneuro",
            "--task",
            "task2_2D_4class",
            "--cache",
            str(tmp_path / "cache"),
            "--splits",
            "val",
        ]
        assert main(arguments) == 0
        assert len(emulator.cutout_requests()) == 6  # image and labels of three regions (no ZI in 4-class tasks)
        assert main(arguments) == 0
        assert len(emulator.cutout_requests()) == 6  # the second call finds the cache intact
    out = capsys.readouterr().out
    assert f"6 cutout(s) of task2_2D_4class (val) in {tmp_path / 'cache'}" in out
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 6


def test_fetch_mtneuro_names_the_tasks_there_are(tmp_path, capsys):
    assert main(["fetch-mtneuro", "--task", "task7", "--cache", str(tmp_path)]) == 1
    assert "No MTNeuro task named 'task7'; the bundles ship task2_2D_3class" in capsys.readouterr().err
