"""The command line: segment, list, demo — and what a user sees when something is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import write_volume
from neurobundles.cli import main


def test_list_shows_bundles_labels_and_cache_state(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "meshnet_hcp_tissue" in out and "1 White-Matter, 2 Grey-Matter" in out
    for name in ("meshnet_hcp_aparc104", "meshnet_hcp_dkt50", "meshnet_hcp_subcortical", "meshnet_hcp_brainmask"):
        assert name in out
    assert "weights not cached" in out or "weights cached" in out


def _bad_inputs(tmp_path, t1_crop):
    rng = np.random.default_rng(0)
    volume = rng.random((20, 20, 20)).astype(np.float32)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(t1_crop.read_bytes()[:400_000])
    return {
        "2D": (write_volume(tmp_path / "slice.nii.gz", volume[:, :, 0]), "is 2D"),
        "4D": (write_volume(tmp_path / "series.nii.gz", np.stack([volume, volume], -1)), "is 4D with 2 volumes"),
        "all zero": (write_volume(tmp_path / "zeros.nii.gz", np.zeros_like(volume)), "every voxel equals 0"),
        "NaN": (write_volume(tmp_path / "nan.nii.gz", np.full_like(volume, np.nan)), "NaN or infinite"),
        "truncated": (truncated, "cannot be read"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["2D", "4D", "all zero", "NaN", "truncated"])
def test_bad_input_gets_a_clear_error_and_nothing_is_written(tmp_path, capsys, t1_crop, case):
    path, message = _bad_inputs(tmp_path, t1_crop)[case]
    out = tmp_path / "out"
    assert main(["segment", str(path), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neurobundles: error: ") and str(path) in err and message in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written, not even the folder


def test_unwritable_output_fails_before_any_work(tmp_path, capsys, head_phantom):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["segment", str(head_phantom), "--output", str(blocker / "out")]) == 1
    assert "a_file is a file, not a folder; choose another output folder" in capsys.readouterr().err


def test_missing_input_is_named(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.nii.gz"), "--output", str(tmp_path / "out")]) == 1
    assert "nope.nii.gz: no such file or folder" in capsys.readouterr().err


def test_unknown_bundle_lists_the_available_ones(tmp_path, capsys, head_phantom):
    assert main(["segment", str(head_phantom), "--bundle", "nope", "--output", str(tmp_path / "out")]) == 1
    assert re.search(r"unknown bundle 'nope'.*meshnet_hcp_tissue", capsys.readouterr().err)


@pytest.mark.slow
def test_demo_segments_the_sample_t1_and_prints_volumes(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "White-Matter" in out and "Grey-Matter" in out and "EstimatedTotalBrainVolume" in out
    assert (tmp_path / "t1_crop_seg.nii.gz").is_file() and (tmp_path / "t1_crop_volumes.csv").is_file()


@pytest.mark.slow
def test_sliding_window_option_agrees_with_the_whole_volume_pass(tmp_path, t1_crop):
    import nibabel as nib

    assert main(["segment", str(t1_crop), "--output", str(tmp_path / "full")]) == 0
    assert main(["segment", str(t1_crop), "--output", str(tmp_path / "window"), "--sliding_window"]) == 0
    full = np.asarray(nib.load(str(tmp_path / "full" / "t1_crop_seg.nii.gz")).dataobj)
    window = np.asarray(nib.load(str(tmp_path / "window" / "t1_crop_seg.nii.gz")).dataobj)
    brain = full > 0
    assert (full == window)[brain].mean() > 0.99
