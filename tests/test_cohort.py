"""Cohort runs never lose a scan: isolated failures, resumable runs, safe paths, clear errors before any work.

Most runs here conform to 32³ at 8 mm (``FAST``) so the cohort machinery, not the network, takes the time;
inputs are crops of the real T1 in the shared data.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO
from neurobundles.cli import _inputs_as_paths, main
from neurobundles.engines import CohortFailedError
from neurobundles.errors import InvalidImageError, OutputNotWritableError
from neurobundles.outputs import safe_id
from neurobundles.transforms.io import LoadVolume, check_image_file
from neurobundles.zoo import run_workflow

BUNDLE = "meshnet_hcp_tissue"
FAST = {"image_transforms#1#size": 32, "image_transforms#1#voxel_size": 8.0}
"""Conform to 32³ at 8 mm: the whole pipeline in a fraction of a second per subject."""


@pytest.fixture(scope="module")
def anatomy(shared_data) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(shared_data / "brainchop" / "t1_crop.nii.gz"))
    return np.asarray(image.dataobj), image.affine


def _crop(anatomy, path: Path, offset: int = 0, voxel_mm: float = 1.0) -> Path:
    """A 64³ crop of the real T1 (1 mm), or the whole head resampled to ``voxel_mm``."""
    data, affine = anatomy
    if voxel_mm == 1.0:
        start = 96 + offset
        data = data[start : start + 64, start : start + 64, start : start + 64]
        affine = affine.copy()
        affine[:3, 3] += affine[:3, :3] @ np.full(3, start)
    else:
        step = int(voxel_mm)
        data = data[::step, ::step, ::step]
        affine = affine.copy()
        affine[:3, :3] *= step
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def _truncated(anatomy, path: Path) -> Path:
    whole = _crop(anatomy, path.with_name("whole_" + path.name))
    path.write_bytes(whole.read_bytes()[:20_000])
    whole.unlink()
    return path


def _run(datalist, output: Path, **override):
    items = [{"image": str(image), "id": ident} for ident, image in datalist]
    return run_workflow(BUNDLE, "inference", datalist=items, output_dir=str(output), **FAST, **override)


@contextmanager
def _cohort_failure(match: str) -> Iterator[None]:
    """The run ends with :class:`CohortFailedError` (MONAI wraps it: it is raised by the config's finalize step)."""
    with pytest.raises(Exception) as raised:
        yield
    chain, seen = [], raised.value
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    failure = next((error for error in chain if isinstance(error, CohortFailedError)), None)
    assert failure is not None, f"not a cohort failure: {raised.value!r}"
    assert re.search(match, str(failure)), str(failure)


def _rows(path: Path) -> list[dict]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


# --- 1. one bad file never stops the others ---------------------------------------------------------------------


def test_a_folder_with_bad_files_segments_every_good_one_and_lists_the_failures(anatomy, tmp_path):
    folder = tmp_path / "mixed"
    _truncated(anatomy, folder / "a_truncated.nii.gz")
    _crop(anatomy, folder / "b_good.nii.gz")
    (folder / "c_text.nii").write_text("not an image")
    _crop(anatomy, folder / "d_good.nii.gz", offset=4)
    with _cohort_failure("2 input"):
        run_workflow(BUNDLE, "inference", dataset_dir=str(folder), output_dir=str(tmp_path / "out"), **FAST)
    out = tmp_path / "out"
    for good in ("b_good", "d_good"):
        assert {f"{good}_seg.nii.gz", f"{good}_qc.png", f"{good}_volumes.csv", f"{good}_summary.json"} <= {
            p.name for p in out.iterdir()
        }
    failures = {row["id"]: row["reason"] for row in _rows(out / "failures.csv")}
    assert set(failures) == {"a_truncated", "c_text"}
    assert "cannot be read" in failures["a_truncated"] and "cannot be read" in failures["c_text"]
    assert not list(out.glob("a_truncated_*")) and not list(out.glob("c_text_*"))
    assert [row["id"] for row in _rows(out / "volumes.csv")] == ["b_good", "d_good"]


def test_the_command_line_exits_non_zero_and_names_the_failures(anatomy, tmp_path, capsys):
    folder = tmp_path / "mixed"
    (folder / "a_text.nii").parent.mkdir(parents=True)
    (folder / "a_text.nii").write_text("not an image")
    _crop(anatomy, folder / "b_good.nii.gz")
    assert main(["segment", str(folder), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurobundles: error: 1 input(s) could not be segmented")
    assert "failures.csv" in err and "Traceback" not in err
    assert (tmp_path / "out" / "b_good_summary.json").is_file()


def test_a_failure_inside_the_pipeline_is_isolated_too(anatomy, tmp_path, monkeypatch):
    """A subject whose inference or post-processing raises is recorded; the next subject is still segmented."""
    from neurobundles.outputs import volumes

    original = volumes.label_volumes
    calls = []

    def fail_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(volumes, "label_volumes", fail_first)
    first, second = _crop(anatomy, tmp_path / "in" / "1.nii.gz"), _crop(anatomy, tmp_path / "in" / "2.nii.gz", 4)
    inputs = [("first", first), ("second", second)]
    with _cohort_failure("simulated failure"):
        _run(inputs, tmp_path / "out")
    assert (tmp_path / "out" / "second_summary.json").is_file()
    assert not list((tmp_path / "out").glob("first*"))  # no orphan label map or QC picture


# --- 2. safe paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ident", ["../escaped", "/abs/olute", "a/b", "..", ".hidden", ""])
def test_unsafe_ids_are_refused(ident):
    with pytest.raises(ValueError, match="not a plain file name"):
        safe_id(ident)


def test_a_datalist_id_with_dotdot_writes_nothing_outside_the_output_folder(anatomy, tmp_path):
    good = _crop(anatomy, tmp_path / "in" / "x.nii.gz")
    out = tmp_path / "trav" / "out"
    with _cohort_failure("not a plain file name"):
        _run([("../escaped", good), ("fine", good)], out)
    assert sorted(p.name for p in (tmp_path / "trav").iterdir()) == ["out"]
    assert not list(out.glob("*escaped*")) and (out / "fine_summary.json").is_file()


# --- 3. resumable runs --------------------------------------------------------------------------------------------


def test_rerunning_after_adding_a_subject_keeps_every_subject_and_skips_finished_ones(anatomy, tmp_path):
    first = _crop(anatomy, tmp_path / "in" / "s1.nii.gz")
    out = tmp_path / "out"
    _run([("s1", first)], out)
    finished = (out / "s1_summary.json").stat().st_mtime_ns
    second = _crop(anatomy, tmp_path / "in" / "s2.nii.gz", offset=4)
    workflow = _run([("s2", second), ("s1", first)], out)
    assert (out / "s1_summary.json").stat().st_mtime_ns == finished
    assert workflow.parser.get_parsed_content("cohort").totals == {"segmented": 1, "skipped": 1, "failed": 0}
    assert [row["id"] for row in _rows(out / "volumes.csv")] == ["s1", "s2"]
    _run([("s2", second)], out)  # a run over only the new subject still keeps the old one in the table
    assert [row["id"] for row in _rows(out / "volumes.csv")] == ["s1", "s2"]


def test_overwrite_segments_finished_subjects_again(anatomy, tmp_path):
    image = _crop(anatomy, tmp_path / "in" / "s1.nii.gz")
    _run([("s1", image)], tmp_path / "out")
    finished = (tmp_path / "out" / "s1_summary.json").stat().st_mtime_ns
    time.sleep(0.01)
    _run([("s1", image)], tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "s1_summary.json").stat().st_mtime_ns > finished


def test_a_subject_made_from_another_image_is_not_taken_as_finished(anatomy, tmp_path):
    out = tmp_path / "out"
    _run([("s1", _crop(anatomy, tmp_path / "in" / "a.nii.gz"))], out)
    _run([("s1", _crop(anatomy, tmp_path / "in" / "b.nii.gz", offset=4))], out)
    assert json.loads((out / "s1_summary.json").read_text())["image"].endswith("b.nii.gz")


@pytest.mark.slow
def test_a_run_killed_while_writing_a_label_map_is_completed_by_running_it_again(anatomy, tmp_path):
    """SIGKILL as soon as the hidden temporary label map appears; the second run finishes the job cleanly."""
    inputs = tmp_path / "in"
    _crop(anatomy, inputs / "t1.nii.gz")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "neurobundles", "segment", str(inputs), "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    caught = None
    while process.poll() is None and time.monotonic() < deadline and caught is None:
        caught = next((p for p in out.glob(".t1_seg.nii.gz.tmp-*")), None) if out.is_dir() else None
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert caught is not None, "the run ended before its label map was being written"
    assert not (out / "t1_summary.json").exists()
    assert main(["segment", str(inputs), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["t1_seg.nii.gz", "t1_qc.png", "t1_volumes.csv", "t1_summary.json", "volumes.csv", "qc_sheet.png"]
    )
    nib.load(str(out / "t1_seg.nii.gz")).get_fdata()  # complete and readable


def test_stale_temporaries_are_never_inputs_and_are_removed(anatomy, tmp_path):
    folder = tmp_path / "scans"
    _crop(anatomy, folder / "t1.nii.gz")
    (folder / ".t1_seg.nii.gz.tmp-x1y2.nii.gz").write_bytes(b"")  # what SIGKILL mid-write leaves
    run_workflow(BUNDLE, "inference", dataset_dir=str(folder), output_dir=str(folder), **FAST)
    assert not list(folder.glob(".*"))
    assert json.loads((folder / "t1_summary.json").read_text())["outputs"]["labels"] == "t1_seg.nii.gz"


# --- 5. clear errors before any work -----------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [np.zeros((4, 4)), np.diag([1.0, 1.0, 0.0, 1.0])], ids=["zero", "singular"])
def test_an_image_with_a_zero_or_singular_affine_is_refused_from_its_header(tmp_path, affine):
    path = tmp_path / "bad.nii.gz"
    image = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), None)
    image.header.set_qform(None, code=0)
    image.header.set_sform(affine, code=1)
    nib.save(image, str(path))
    with pytest.raises(InvalidImageError, match="affine is zero, singular or not finite"):
        check_image_file(path)
    with pytest.raises(InvalidImageError, match="affine is zero, singular or not finite"):
        LoadVolume()(path)


def test_unknown_bundle_says_which_bundles_exist(tmp_path, capsys, head_phantom):
    assert main(["segment", str(head_phantom), "--bundle", "does_not_exist", "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurobundles: error: unknown bundle 'does_not_exist'") and BUNDLE in err
    (tmp_path / "empty").mkdir()
    assert (
        main(["segment", str(head_phantom), "--bundle", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 1
    )
    assert "is not a bundle folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_bogus_extension_is_refused_before_any_work(tmp_path, capsys, head_phantom):
    assert main(["segment", str(head_phantom), "--ext", ".bogus", "--output", str(tmp_path / "o")]) == 1
    assert "output extension '.bogus' is not a label-map format" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_full_disk_is_reported_before_any_work(tmp_path, capsys, head_phantom, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 2**20, 2**20))
    assert main(["segment", str(head_phantom), "--output", str(tmp_path / "o")]) == 1
    assert "only 1 MB free on its disk; free some space" in capsys.readouterr().err


def test_a_disk_that_fills_during_the_run_stops_it_with_a_clear_error_and_no_orphans(anatomy, tmp_path, monkeypatch):
    from neurobundles.outputs import label_maps

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    image = _crop(anatomy, tmp_path / "in" / "s1.nii.gz")
    monkeypatch.setattr(label_maps.nib, "save", full)
    with pytest.raises(Exception) as raised:
        _run([("s1", image)], tmp_path / "out")
    chain, seen = [], raised.value
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    assert any(isinstance(e, OutputNotWritableError) and "free some space" in str(e) for e in chain)
    assert not list(tmp_path.rglob("s1_*")) and not list(tmp_path.rglob(".s1_*"))


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_monai_bundle_run_on_a_missing_or_empty_dataset_dir_starts_with_a_readable_line(tmp_path, state):
    dataset = tmp_path / "data"
    if state == "empty":
        dataset.mkdir()
    config = REPO / "bundles" / BUNDLE / "configs" / "inference.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--dataset_dir", str(dataset)]
    result = subprocess.run([*command, "--output_dir", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode != 0
    first = next(line for line in (result.stdout + result.stderr).splitlines() if "neurobundles" in line)
    assert f"neurobundles: error: {dataset}" in first


# --- 6-10. plausibility, names, inputs that are outputs, folders ----------------------------------------------------


def test_a_ten_mm_head_is_refused_unless_the_limit_is_raised(anatomy, tmp_path):
    coarse = _crop(anatomy, tmp_path / "in" / "coarse.nii.gz", voxel_mm=10)
    assert nib.load(str(coarse)).shape == (26, 26, 26)
    with _cohort_failure("far coarser than the 1 mm"):
        _run([("coarse", coarse)], tmp_path / "out")
    _run([("coarse", coarse)], tmp_path / "allowed", max_voxel_mm=20)
    (row,) = _rows(tmp_path / "allowed" / "volumes.csv")
    assert "voxels of 10 × 10 × 10 mm are coarser than the 1 mm" in row["warnings"]


def test_a_label_map_given_as_an_image_gets_a_warning(fsaverage, tmp_path):
    _run([("aseg", fsaverage / "mri" / "aseg.mgz")], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "aseg_summary.json").read_text())
    assert any("looks like a label map, not an MRI" in warning for warning in summary["warnings"])


def test_a_real_t1_gets_no_label_map_warning(t1_crop):
    from neurobundles.plausibility import label_map_message

    assert label_map_message(np.asarray(nib.load(str(t1_crop)).dataobj), "t1") is None


def test_file_names_starting_with_a_dash_are_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("-lead.nii.gz", "-trail.nii.gz"):
        Path(name).write_bytes(b"")
    assert _inputs_as_paths(["segment", "-lead.nii.gz", "--output", "o", "-trail.nii.gz"]) == [
        "segment",
        "./-lead.nii.gz",
        "--output",
        "o",
        "./-trail.nii.gz",
    ]
    assert _inputs_as_paths(["segment", "--output", "o", "--", "-not-yet.nii.gz"])[-1] == "./-not-yet.nii.gz"


def test_dash_names_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    """Both files are empty: the errors name them, so both were read as inputs, before any inference."""
    monkeypatch.chdir(tmp_path)
    for name in ("-lead.nii.gz", "-trail.nii.gz"):
        Path(name).write_bytes(b"")
    assert main(["segment", "-lead.nii.gz", "--output", "o", "-trail.nii.gz"]) == 1
    captured = capsys.readouterr()
    assert "-lead.nii.gz: the file is empty" in captured.out + captured.err
    assert "2 input(s) could not be segmented" in captured.err


@pytest.mark.parametrize("inside", [True, False], ids=["output inside input", "output is input"])
def test_earlier_outputs_in_an_input_folder_are_not_segmented_again(anatomy, tmp_path, inside):
    folder = tmp_path / "scans"
    _crop(anatomy, folder / "t1.nii.gz")
    out = folder / "seg" if inside else folder
    for _ in range(2):
        run_workflow(BUNDLE, "inference", dataset_dir=str(folder), output_dir=str(out), recursive=True, **FAST)
        run_workflow(BUNDLE, "inference", dataset_dir=str(folder), output_dir=str(out), overwrite=True, **FAST)
    assert not list(tmp_path.rglob("*_seg_seg*"))
    assert [row["id"] for row in _rows(out / "volumes.csv")] == ["t1"]


def test_a_corrupt_cached_weight_file_is_replaced_not_reported_missing(tmp_path, monkeypatch, shared_data):
    from neurobundles.errors import WeightsUnavailableError
    from neurobundles.zoo import bundle_path, hub

    monkeypatch.setenv("NEUROBUNDLES_HOME", str(tmp_path / "home"))
    remote = hub.bundle_remote_files(bundle_path(BUNDLE))["models/model.pth"]
    cached = tmp_path / "home" / remote.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"corrupt")
    assert hub.fetch(remote).read_bytes() == (shared_data / remote.name).read_bytes()
    cached.write_bytes(b"corrupt again")
    monkeypatch.setenv("NEUROBUNDLES_DATA", str(tmp_path / "no_mirror"))
    monkeypatch.setattr(hub, "_copy_url", lambda url: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsUnavailableError, match=r"the cached copy .* was corrupt and was removed"):
        hub.fetch(remote)


def test_no_output_folder_is_left_when_the_only_input_fails(anatomy, tmp_path, capsys):
    bad = _truncated(anatomy, tmp_path / "bad.nii.gz")
    assert main(["segment", str(bad), "--output", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


# --- 11. an empty prediction is a result, not a crash ----------------------------------------------------------


def test_an_empty_prediction_gives_an_empty_label_map_dice_zero_and_a_warning(anatomy, tmp_path, monkeypatch):
    import torch

    from neurobundles.networks import MeshNet

    network = MeshNet(in_channels=1, out_channels=104, channels=21, dilations=[1, 2, 2, 4, 4, 8, 8, 16])
    with torch.no_grad():
        network.head.conv.bias.copy_(torch.tensor([100.0] + [0.0] * 103))  # background wins everywhere
    weights = tmp_path / "background.pt"
    torch.save(network.state_dict(), weights)
    subjects = tmp_path / "subjects" / "s1" / "mri"
    subjects.mkdir(parents=True)
    image = _crop(anatomy, subjects / "orig.nii.gz")
    labels = np.zeros(nib.load(str(image)).shape, np.int16)
    labels[20:40, 20:40, 20:40] = 2  # left cerebral white matter
    nib.save(nib.Nifti1Image(labels, nib.load(str(image)).affine), str(subjects / "aparc+aseg.nii.gz"))
    out = tmp_path / "out"
    run_workflow(
        "meshnet_hcp_aparc104", ["inference", "evaluate"], ckpt_path=str(weights), output_dir=str(out),
        dataset_dir=str(tmp_path / "subjects"), label_file="aparc+aseg.nii.gz",
        datalist="$neurobundles.data.freesurfer_datalist(@dataset_dir, image='orig.nii.gz', label=@label_file)",
        **FAST,
    )  # fmt: skip
    assert not np.asarray(nib.load(str(out / "s1_seg.nii.gz")).dataobj).any()
    dice = json.loads((out / "dice.json").read_text())
    assert dice["per_class"]["Left-Cerebral-White-Matter"] == 0.0 and dice["mean"] == 0.0
    (row,) = _rows(out / "volumes.csv")
    assert "the segmentation is empty" in row["warnings"]


# --- 12. QC pictures a person can review ------------------------------------------------------------------------


def test_white_matter_is_drawn_in_a_colour_that_stands_out_from_a_t1():
    from neurobundles.outputs import visible_colors

    colors = visible_colors({0: (0, 0, 0), 1: (245, 245, 245), 2: (205, 62, 78)})
    assert colors[2] == (205, 62, 78) and colors[0] == (0, 0, 0)
    red, green, blue = colors[1]
    assert max(red, green, blue) - min(red, green, blue) > 100  # saturated, unlike the near-white T1 white matter


def test_qc_picture_shows_whole_slices_large_enough_to_judge_boundaries(t1_crop, tmp_path):
    import matplotlib.image

    from neurobundles.outputs import qc_figure

    image = nib.load(str(t1_crop))
    labels = (np.asarray(image.dataobj) > 100).astype(np.uint8)
    qc_figure(
        np.asarray(image.dataobj, np.float32), labels, image.affine, {1: (245, 245, 245)}, "t", tmp_path / "qc.png"
    )
    picture = matplotlib.image.imread(str(tmp_path / "qc.png"))
    assert picture.shape[1] >= 3 * 256 * 1.5 and picture.shape[0] >= 256 * 1.5  # three whole 256² slices at 1.5×


def test_a_cohort_gets_a_contact_sheet_with_one_row_per_subject(anatomy, tmp_path):
    import matplotlib.image

    inputs = [(f"s{i}", _crop(anatomy, tmp_path / "in" / f"s{i}.nii.gz", offset=2 * i)) for i in range(3)]
    _run(inputs, tmp_path / "out")
    single = matplotlib.image.imread(str(tmp_path / "out" / "s0_qc.png"))
    sheet = matplotlib.image.imread(str(tmp_path / "out" / "qc_sheet.png"))
    assert single.shape[1] <= 1000 and sheet.shape[:2] == (3 * single.shape[0], 1000)


# --- scale-out: torchrun on CPU (gloo) ----------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_with_two_processes_segments_every_input_exactly_once(anatomy, tmp_path):
    folder = tmp_path / "cohort"
    for index in range(4):
        _crop(anatomy, folder / f"s{index}.nii.gz", offset=2 * index)
    run_workflow(BUNDLE, "inference", dataset_dir=str(folder), output_dir=str(tmp_path / "single"), **FAST)
    configs = [
        str(REPO / "bundles" / BUNDLE / "configs" / f"{name}.json") for name in ("inference", "multi_gpu_inference")
    ]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run"]
    command += ["--config_file", str(configs), "--dataset_dir", str(folder), "--output_dir", str(tmp_path / "multi")]
    command += [arg for key, value in FAST.items() for arg in (f"--{key}", str(value))]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    for index in range(4):
        assert log.count(f"s{index}.nii.gz → ") == 1, f"s{index} segmented {log.count(f's{index}.nii.gz → ')} times"
    assert (tmp_path / "multi" / "volumes.csv").read_text() == (tmp_path / "single" / "volumes.csv").read_text()
