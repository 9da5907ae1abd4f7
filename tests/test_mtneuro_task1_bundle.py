"""MTNeuro Task 1 bundle and Task 3 readout on a loopback BossDB: region labels, ROI settings, training through
``python -m monai.bundle run``, BYOL and the linear probe, evaluation, inference on cutouts, the multi-seed tool."""

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
from PIL import Image

from bossdb_emulator import BossDBEmulator, intern_environment
from conftest import REPO
from neurobundles.data.mtneuro import Cutout, CutoutCache, MTNeuroUnavailableError
from neurobundles.engines import CohortFailedError
from neurobundles.errors import InvalidImageError
from neurobundles.inferers.tiles import TileClassifierInferer
from neurobundles.mtneuro import (
    DEFAULT_TASK1_CONFIG,
    REGIONS,
    label_report,
    prefetch_task1,
    resolve_config,
    task1_datalist,
)
from neurobundles.tools import mtneuro_benchmark
from neurobundles.transforms.cutout_tiles import TileCutoutd
from neurobundles.zoo import bundle_parser, bundle_path, run_workflow

BUNDLE = "mtneuro_task1_resnet18"
CTX, STR, VP, ZI = range(4)
IMAGE = "bossdb://prasad/prasad2020/image"

SMALL = {
    "max_epochs": 12,
    "batch_size": 16,
    "val_interval": 4,
    "network_def#channels": [8, 16, 32, 64],
    "network_def#layers": [1, 1, 1, 1],
}
"""The shipped recipe (SGD lr 0.03, weight decay 0.3 on the head, 20 % dropout) on a narrow ResNet for seconds on CPU;
the width of the real one is checked by the conformance tests and test_mtneuro_task1_pieces.py."""

BYOL_SMALL = {"byol_hidden_dim": 64, "byol_projection_dim": 16, "byol_warmup_epochs": 1}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small convolutions gain nothing from a second thread, and on a loaded 2-core machine two OpenMP threads made
    training tests many times slower (spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    """A small task on the real coordinates, fetched through ``intern`` from an emulator that is then stopped.

    Every cube of every setting, fewer slices: train 32, val 8, test 8 of cube set A; 8 slices (456-463, half of
    them beyond the annotated z 109-459) of cube sets B, C, D; tiles downsampled 8× (32² for the network).
    """
    pytest.importorskip("intern")
    root = tmp_path_factory.mktemp("mtneuro_task1")
    raw = json.loads(DEFAULT_TASK1_CONFIG.read_text())
    raw["z_ranges"] = {"train": [110, 142], "val": [380, 388], "test": [420, 428], "all": [456, 464]}
    raw["downsample"] = 8
    raw["task3"] = {"cube_set": "A", "z_range": "test"}
    config = root / "task.json"
    config.write_text(json.dumps(raw))
    with BossDBEmulator() as emulator, intern_environment(emulator.host, emulator.token, root / "home"):
        paths = prefetch_task1(root / "cache", config=config, backoff=0.01)
        requests = emulator.cutout_requests()
    return {"root": root, "config": config, "cache": root / "cache", "paths": paths, "requests": requests}


def _overrides(task: dict, run: Path, **extra) -> dict:
    return {"task_config_file": str(task["config"]), "cache_dir": str(task["cache"]), "offline": True,
            "ckpt_dir": str(run / "models"), "output_dir": str(run / "eval"), **SMALL, **extra}  # fmt: skip


# --- data ------------------------------------------------------------------------------------------------------------


def test_every_cube_is_fetched_once_per_channel(task):
    config = resolve_config(task["config"])
    boxes = {b for s in config.settings for sp in ("train", "val", "test") for b in config.boxes(s, sp)}
    boxes |= set(config.task3_boxes())  # cube set A test slices: already there (image), plus pixel_labels
    channels = {path.name.split("_x")[0] for path in task["paths"]}
    assert channels == {"image", "roi_labels", "pixel_labels"}
    assert len(task["paths"]) == 2 * len(boxes) + 4  # image + roi_labels per box; pixel_labels of 4 Task 3 cubes
    assert len(task["requests"]) == len(task["paths"])  # each cutout small enough for one request


def test_region_labels_are_the_mapped_mode_of_each_tile(task):
    """Hand-checked against the emulator's annotation: zone ids 1 (cortex), 2 (striatum), 4 (VP), 5 (ZI) along x,
    with minority bands 3 (TRN, x 3270-3329), 6 (internal capsule, x 2040-2099), 7 (x < 700), 8 (x 4280-4339)."""
    items: dict[tuple[str, str], dict] = {}
    for item in task1_datalist("ROI-C3", "train", task["config"], task["cache"], offline=True):
        items.setdefault((item["cube_set"], item["cube_region"]), item)  # each cube's first (annotated) slice
    # cube A VP spans x 3063-3318: 207 columns of VP (4) and 49 of TRN (3): the mode is 4, VP
    vp = items["A", "VP"]
    roi = np.asarray(CutoutCache(task["cache"], offline=True).load(
        Cutout("bossdb://prasad/prasad_analysis/roi_labels", (3063, 3319), (850, 1106), (110, 142))))  # fmt: skip
    assert np.bincount(roi[0].ravel()).tolist()[3:5] == [49 * 256, 207 * 256]
    assert (vp["roi_mode"], vp["label"]) == (4, VP)
    # cube D ZI spans x 1799-2054: 241 columns of ZI (5), 15 of internal capsule (6)
    assert (items["D", "ZI"]["roi_mode"], items["D", "ZI"]["label"]) == (5, ZI)
    assert [(items["A", r]["roi_mode"], items["A", r]["label"]) for r in ("CTX", "STR", "ZI")] == [
        (1, CTX),
        (2, STR),
        (5, ZI),
    ]
    assert items["A", "CTX"]["image"].shape == (1, 256, 256) and items["A", "CTX"]["image"].dtype == np.uint8


def test_slices_without_annotation_take_their_cube_region(task):
    """z 460-463 lie beyond the annotation (roi_labels 0, whose mode would say CTX in every cube)."""
    items = task1_datalist("ROI-C2", "test", task["config"], task["cache"], offline=True)
    late = [i for i in items if i["z"] >= 460]
    assert late and all(i["roi_mode"] == 0 and i["nominal"] for i in late)
    assert [i["label"] for i in late] == [REGIONS.index(i["cube_region"]) for i in late]
    literal = json.loads(task["config"].read_text()) | {"unannotated_tiles": "mode"}
    as_mode = task1_datalist("ROI-C2", "test", literal, task["cache"], offline=True)
    assert {i["label"] for i in as_mode if i["z"] >= 460} == {CTX}
    report = label_report(items, REGIONS)
    assert report["tiles"] == 64 and report["nominal"] == 32 and report["disagreements"] == {}
    assert report["per_region"] == {name: 16 for name in REGIONS}


def test_roi_settings_select_the_right_cubes(task):
    def cubes(setting: str, split: str) -> set[tuple[str, str]]:
        items = task1_datalist(setting, split, task["config"], task["cache"], offline=True)
        return {(i["cube_set"], i["cube_region"]) for i in items}

    a = {("A", r) for r in REGIONS}
    assert cubes("ROI-C1", "train") == cubes("ROI-C2", "train") == a and cubes("ROI-C1", "test") == a
    assert cubes("ROI-C2", "test") == cubes("ROI-C3", "test") == {(s, r) for s in "BC" for r in REGIONS}
    assert cubes("ROI-C3", "train") == a | {("D", r) for r in REGIONS}
    config = resolve_config(task["config"])  # a model trained for ROI-C1 is tested in ROI-C1 and ROI-C2
    assert config.evaluations("ROI-C1") == ("ROI-C1", "ROI-C2") and config.evaluations("ROI-C3") == ("ROI-C3",)
    tiles = task1_datalist("ROI-C2", "test", task["config"], task["cache"], offline=True)
    corner = next(i for i in tiles if (i["cube_set"], i["cube_region"]) == ("C", "ZI"))
    assert (corner["x"], corner["y"], corner["z"]) == (1031, 906, 456)  # MTNeuro Table A2, cube set C, ZI
    quads = task1_datalist("ROI-C1", "test", task["config"], task["cache"], offline=True, quadrant_images=True)
    assert (
        len(quads) == 4 * 32
        and quads[3]["image"].shape == (1, 128, 128)
        and (quads[3]["y"], quads[3]["x"])
        == (
            1028,
            4728,
        )
    )


def test_missing_cutouts_offline_say_how_to_prefetch(task, tmp_path):
    with pytest.raises(MTNeuroUnavailableError, match="fetch"):
        task1_datalist("ROI-C1", "train", task["config"], tmp_path / "empty", offline=True)


# --- pieces of the inference path -----------------------------------------------------------------------------------


def test_cutouts_are_cut_into_whole_tiles_slice_by_slice():
    cutout = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 5, 7, 2)  # [1, Y, X, Z]
    out = TileCutoutd("image", tile_size=(2, 3))({"image": cutout})
    assert out["image"].shape == (8, 2, 3)  # 2 rows × 2 columns of whole tiles per slice, 2 slices
    assert out["image_tiles"].tolist()[:5] == [[0, 0, 0], [0, 0, 3], [0, 2, 0], [0, 2, 3], [1, 0, 0]]
    torch.testing.assert_close(out["image"][5], cutout[0, 0:2, 3:6, 1])
    with pytest.raises(InvalidImageError, match="smaller than one 8×8 tile"):
        TileCutoutd("image", tile_size=(8, 8))({"image": cutout})


def test_tile_inferer_returns_classes_first_per_tile():
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    tiles = torch.rand(2, 5, 2, 2)  # two inputs of five 2×2 tiles
    logits = TileClassifierInferer(batch_size=2)(tiles, network)
    assert logits.shape == (2, 3, 5)
    torch.testing.assert_close(logits[1, :, 4], network(tiles[1, 4][None, None])[0])


# --- training, evaluation, inference ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(task) -> Path:
    """The supervised recipe trained through ``python -m monai.bundle run`` (one thread)."""
    run = task["root"] / "supervised"
    args = [arg for key, value in _overrides(task, run, seed=1).items() for arg in (f"--{key}", json.dumps(value)
            if not isinstance(value, str) else value)]  # fmt: skip
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               str(bundle_path(BUNDLE) / "configs" / "train.json"), *args]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(REPO / "common"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=task["root"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run


def _records(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


def _accuracy(folder: Path) -> dict:
    return json.loads((folder / "accuracy.json").read_text())


def test_supervised_training_separates_the_regions_on_held_out_tiles(task, trained):
    assert (trained / "models" / "model.pt").is_file() and (trained / "models" / "model_final.pt").is_file()
    log = _records(trained / "eval" / "training_log.csv")
    assert len(log) == SMALL["max_epochs"] and float(log[-1]["loss"]) < 0.6 * float(log[0]["loss"])
    for setting in ("ROI-C1", "ROI-C2"):  # held-out slices of cube set A; other cubes (B, C)
        run_workflow(BUNDLE, ["train", "evaluate"], **_overrides(task, trained), eval_setting=setting,
                     ckpt_path=str(trained / "models" / "model_final.pt"))  # fmt: skip
        folder = trained / "eval" / f"{setting}_test"
        report = _accuracy(folder)
        assert report["accuracy"] >= 0.9, (setting, report)
        matrix = np.array(report["confusion_matrix"])
        assert matrix.sum() == report["images"] == (32 if setting == "ROI-C1" else 64)
        rows = _cells(folder / "confusion_matrix.csv")
        assert (
            rows[0] == ["true \\ predicted", *REGIONS]
            and np.array(rows[1:])[:, 1:].astype(int).tolist() == matrix.tolist()
        )
        predictions = _records(folder / "predictions.csv")
        assert len(predictions) == matrix.sum() and {"id", "cube_set", "label", "predicted", "p_ZI"} <= set(
            predictions[0]
        )
        assert (folder / "confusion_matrix.png").stat().st_size > 1000


def test_mixup_variant_trains_with_soft_targets(task):
    run = task["root"] / "mixup"
    run_workflow(BUNDLE, "train", **_overrides(task, run, max_epochs=1, val_interval=1, mixup_prob=0.5))
    assert (run / "models" / "model_final.pt").is_file() and (run / "eval" / "validation" / "accuracy.json").is_file()


def test_byol_loss_decreases_and_the_linear_probe_trains(task):
    run = task["root"] / "byol"
    overrides = _overrides(task, run, max_epochs=6, batch_size=32, **BYOL_SMALL)
    run_workflow(BUNDLE, ["train", "byol"], **overrides)
    losses = [float(row["loss"]) for row in _records(run / "eval" / "byol_log.csv")]
    assert len(losses) == 6 and min(losses[-2:]) < 0.8 * losses[0]
    assert (run / "models" / "byol_encoder.pt").is_file()
    run_workflow(BUNDLE, ["train", "linear_probe"], **overrides)
    probe = [float(row["loss"]) for row in _records(run / "eval" / "probe_log.csv")]
    assert probe[-1] < 0.5 * probe[0]
    run_workflow(BUNDLE, ["train", "evaluate"], **overrides, eval_quadrants=True)
    report = _accuracy(run / "eval" / "ROI-C1_test")
    assert report["images"] == 4 * 32 and report["accuracy"] > 0.5


def test_inference_classifies_every_tile_of_tiles_and_cutouts(task, trained, tmp_path):
    cache = CutoutCache(task["cache"], offline=True)
    ctx = np.asarray(cache.load(Cutout(IMAGE, (4600, 4856), (900, 1156), (420, 428))))
    vp = np.asarray(cache.load(Cutout(IMAGE, (3063, 3319), (850, 1106), (420, 428))))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "tile.npy", ctx[0])  # one 256² tile
    stack = np.concatenate([ctx[:3], vp[:3]], axis=2)  # [z 3, y 256, x 512]: cortex left, VP right
    pages = [Image.fromarray(page) for page in stack]
    pages[0].save(inputs / "stack.tif", save_all=True, append_images=pages[1:])
    nib.save(nib.Nifti1Image(np.transpose(vp[:2], (2, 1, 0)), np.eye(4)), inputs / "vp.nii.gz")  # NIfTI: x, y, z
    (inputs / "broken.npy").write_bytes(b"not an array")
    output = tmp_path / "out"
    override = {"task_config_file": str(task["config"]), "dataset_dir": str(inputs), "output_dir": str(output),
                "ckpt_path": str(trained / "models" / "model_final.pt"), **SMALL}  # fmt: skip
    with pytest.raises(RuntimeError) as raised:
        run_workflow(BUNDLE, "inference", **override)
    assert isinstance(raised.value.__cause__, CohortFailedError) or "broken" in str(raised.value.__cause__)
    rows = {r["id"]: r for r in _records(output / "regions.csv")}
    assert rows["tile"]["majority"] == "CTX" and rows["vp"]["majority"] == "VP" and rows["vp"]["tiles"] == "2"
    tiles = _records(output / "stack_regions.csv")
    assert [(t["z"], t["x"], t["name"]) for t in tiles] == [(str(z), x, name) for z in range(3) for x, name in
                                                           (("0", "CTX"), ("256", "VP"))]  # fmt: skip
    assert all(abs(sum(float(t[f"p_{r}"]) for r in REGIONS) - 1) < 1e-4 for t in tiles)
    failures = _records(output / "failures.csv")
    assert [f["id"] for f in failures] == ["broken"]
    summary = json.loads((output / "stack_summary.json").read_text())
    assert summary["counts"] == {"CTX": 3, "STR": 0, "VP": 3, "ZI": 0} and summary["outputs"] == {
        "regions": "stack_regions.csv"
    }
    before = (output / "stack_regions.csv").stat().st_mtime_ns
    (inputs / "broken.npy").unlink()
    run_workflow(BUNDLE, "inference", **override)  # resumes: complete inputs are skipped
    assert (output / "stack_regions.csv").stat().st_mtime_ns == before and not (output / "failures.csv").exists()


# --- the multi-seed benchmark and the Task 3 readout ------------------------------------------------------------


def test_benchmark_reports_mean_and_std_over_seeds_and_isolates_failures(task, tmp_path, capsys):
    output = tmp_path / "bench"
    (output / "supervised" / "ROI-C1").mkdir(parents=True)
    (output / "supervised" / "ROI-C1" / "seed_350").write_text("a file where the run folder goes: this run fails")
    options = {"task_config": str(task["config"]), "cache": str(task["cache"]), "offline": True, "n_components": 8,
               **SMALL, "max_epochs": 2, "val_interval": 2}  # fmt: skip
    table = mtneuro_benchmark.benchmark("supervised,pca", "ROI-C1", "1,100,350", str(output), **options)
    rows = _records(output / "results.csv")
    assert len(rows) == 2 * 2 + 2  # two seeds tested in ROI-C1 and ROI-C2, PCA once in each
    supervised = dict(zip(["Method", "C1", "C1 runs", "C1 paper", "C2", "C2 runs", "C2 paper"], table[0]))
    assert supervised["C1 runs"] == "2" and " ± " in supervised["C1"] and supervised["C1 paper"] == "0.88 ± 0.03"
    assert table[1][1].count("±") == 0 and table[1][3] == "0.59"  # PCA: one run, published 0.59
    failures = _records(output / "failures.csv")
    assert [(f["method"], f["seed"]) for f in failures] == [("supervised", "350")]
    assert "Supervised" in capsys.readouterr().out
    done = output / "supervised" / "ROI-C1" / "seed_1" / "done.json"
    stamp = done.stat().st_mtime_ns
    mtneuro_benchmark.benchmark("supervised", "ROI-C1", "1", str(output), **options)  # resumes without training
    assert done.stat().st_mtime_ns == stamp


def test_readout_writes_table3_and_scatter_from_trained_runs(task, trained, tmp_path):
    runs = tmp_path / "runs"
    for seed in (1, 2):  # the trained model twice, as two seeds of the benchmark layout
        run = runs / "supervised" / "ROI-C1" / f"seed_{seed}"
        (run / "models").mkdir(parents=True)
        (run / "models" / "model_final.pt").write_bytes((trained / "models" / "model_final.pt").read_bytes())
        (run / "done.json").write_text("{}")
    output = tmp_path / "readout"
    table = mtneuro_benchmark.readout(str(runs), "ROI-C1", output=str(output), baselines="pca",
                                      task_config=str(task["config"]), cache=str(task["cache"]), offline=True,
                                      n_components=16, **SMALL)  # fmt: skip
    rows = _cells(output / "table3_ROI-C1.csv")
    assert rows[0] == ["Methods", "Vessels", "Axons", "Cell Count", "Cell Size", "Dist (k=1)"]
    assert [r[0] for r in rows[1:]] == ["Supervised", "PCA"] and " ± " in rows[1][1]
    assert table[0][-1] == "0.77 0.94 0.67 0.61 0.48"  # the paper's ROI-C1 supervised row beside ours
    features = _records(output / "features.csv")
    assert len(features) == 4 * 8 * 4  # 4 cubes × 8 slices × 4 quadrants
    long = _records(output / "readout_ROI-C1.csv")
    assert all(float(r["r2"]) <= 1 + 1e-9 for r in long) and len(long) == (2 + 1) * 5
    assert (output / "scatter_supervised_ROI-C1.png").stat().st_size > 1000


@pytest.mark.slow
def test_multi_gpu_config_trains_with_torchrun_on_two_cpu_processes(task, tmp_path):
    """multi_gpu_train.json on gloo: each process trains its shard of the tiles, rank 0 keeps the checkpoints."""
    configs = [str(bundle_path(BUNDLE) / "configs" / f"{name}.json") for name in ("train", "multi_gpu_train")]
    override = _overrides(task, tmp_path, max_epochs=1, val_interval=1)
    args = [arg for key, value in override.items() for arg in (f"--{key}", value if isinstance(value, str)
            else json.dumps(value))]  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run",
               "--config_file", str(configs), *args]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(REPO / "common"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    network = bundle_parser(BUNDLE, "train", **SMALL).get_parsed_content("network_def")
    for name in ("model.pt", "model_final.pt"):
        network.load_state_dict(torch.load(tmp_path / "models" / name, weights_only=True), strict=True)
    assert (result.stdout + result.stderr).count("neurobundles.training - INFO - epoch 1/1") == 1
