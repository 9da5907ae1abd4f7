"""meshnet_hcp_tissue end to end on real MRI: equals the published pipeline, evaluates, handles any grid."""

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
from scipy import ndimage

from conftest import REPO
from neurobundles.labels import tissue_map
from neurobundles.transforms import MapLabels
from neurobundles.zoo import run_workflow
from reference import reference_segmentation

pytestmark = pytest.mark.slow

BUNDLE = "meshnet_hcp_tissue"
DILATIONS = [1, 2, 4, 8, 16, 8, 4, 2, 1]


def _reference(shared_data: Path, image: Path) -> np.ndarray:
    return reference_segmentation(image, shared_data / "brainchop" / "model5_gw_ae" / "model.pth", DILATIONS, "relu")


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_monai_bundle_run_equals_the_published_pipeline_on_t1_crop(tmp_path, shared_data, t1_crop):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "t1_crop.nii.gz").symlink_to(t1_crop)
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", f"bundles/{BUNDLE}/configs/inference.json",
        "--dataset_dir", str(inputs), "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, env=os.environ | {"PYTHONPATH": str(REPO / "common")})
    ours = _labels(tmp_path / "out" / "t1_crop_seg.nii.gz")
    reference = _reference(shared_data, t1_crop)
    print(f"t1_crop: agrees with the published pipeline in {(ours == reference).mean():.6%} of voxels")
    assert (ours == reference).mean() >= 0.999
    rows = list(csv.DictReader((tmp_path / "out" / "t1_crop_volumes.csv").open()))
    assert [int(r["voxels"]) for r in rows] == [int((ours == 1).sum()), int((ours == 2).sum()), int((ours > 0).sum())]
    assert (tmp_path / "out" / "t1_crop_qc.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def fsaverage_labels(tmp_path_factory, fsaverage) -> np.ndarray:
    out = tmp_path_factory.mktemp("fsaverage")
    run_workflow(
        BUNDLE, datalist=[{"image": str(fsaverage / "mri" / "orig.mgz"), "id": "fsaverage"}], output_dir=str(out)
    )
    return _labels(out / "fsaverage_seg.nii.gz")


def test_bundle_equals_the_published_pipeline_on_fsaverage(shared_data, fsaverage, fsaverage_labels):
    agreement = (fsaverage_labels == _reference(shared_data, fsaverage / "mri" / "orig.mgz")).mean()
    print(f"fsaverage: agrees with the published pipeline in {agreement:.6%} of voxels")
    assert agreement >= 0.999


def test_left_and_right_white_matter_land_on_the_right_sides(fsaverage, fsaverage_labels):
    """A flip would still score on a symmetric brain; the hemisphere masks catch it."""
    aseg = _labels(fsaverage / "mri" / "aparc+aseg.mgz")
    truth = MapLabels(tissue_map())(aseg)
    assert ((fsaverage_labels == 1) & (aseg == 2)).sum() > 0.6 * (truth[aseg == 2] == 1).sum()
    assert ((fsaverage_labels == 1) & (aseg == 41)).sum() > 0.6 * (truth[aseg == 41] == 1).sum()


@pytest.fixture(scope="module")
def conformed_dice(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval")
    run_workflow(BUNDLE, ["inference", "evaluate"], output_dir=str(out))
    return json.loads((out / "dice.json").read_text())


def test_evaluate_reports_grey_and_white_dice_on_fsaverage(conformed_dice):
    per_class = conformed_dice["per_class"]
    assert set(per_class) == {"White-Matter", "Grey-Matter"}
    # fsaverage is an average brain with blurred borders; these floors catch a broken pipeline
    # (a flipped axis or wrong label order gives Dice below 0.2), not the model's quality
    assert per_class["White-Matter"] > 0.6 and per_class["Grey-Matter"] > 0.4
    assert list(conformed_dice["cases"]) == ["fsaverage"]


def _resample(image: nib.spatialimages.SpatialImage, affine: np.ndarray, shape, order: int) -> np.ndarray:
    source = np.linalg.inv(image.affine) @ affine
    return ndimage.affine_transform(
        np.asarray(image.dataobj, dtype=np.float32), source[:3, :3], source[:3, 3], shape, order=order
    )


def test_non_conformed_input_gives_labels_in_its_own_grid_with_the_same_dice(tmp_path, fsaverage, conformed_dice):
    orig, labels = nib.load(str(fsaverage / "mri" / "orig.mgz")), nib.load(str(fsaverage / "mri" / "aparc+aseg.mgz"))
    shape = (200, 240, 180)
    affine = np.diag([1.2, 1.2, 1.2, 1.0])
    centre = orig.affine @ np.array([128, 128, 128, 1.0])
    affine[:3, 3] = centre[:3] - 1.2 * np.array(shape) / 2
    mri = tmp_path / "subjects" / "fsaverage_12mm" / "mri"
    mri.mkdir(parents=True)
    nib.save(nib.Nifti1Image(_resample(orig, affine, shape, 1), affine), str(mri / "orig.nii.gz"))
    nib.save(
        nib.Nifti1Image(_resample(labels, affine, shape, 0).astype(np.int16), affine), str(mri / "aparc+aseg.nii.gz")
    )

    out = tmp_path / "out"
    run_workflow(
        BUNDLE, ["inference", "evaluate"], output_dir=str(out),
        dataset_dir=str(tmp_path / "subjects"), label_file="aparc+aseg.nii.gz",
        datalist="$neurobundles.data.freesurfer_datalist(@dataset_dir, image='orig.nii.gz', label=@label_file)",
    )  # fmt: skip
    segmentation = nib.load(str(out / "fsaverage_12mm_seg.nii.gz"))
    assert segmentation.shape == shape and np.allclose(segmentation.affine, affine)
    resampled = json.loads((out / "dice.json").read_text())["per_class"]
    for name, value in conformed_dice["per_class"].items():
        assert abs(resampled[name] - value) <= 0.02, (name, resampled[name], value)


def test_implausible_brain_volume_warns_but_still_writes(tmp_path, head_phantom):
    """A phantom is no head: the run finishes, and the subject is flagged in the cohort table (and the log)."""
    run_workflow(BUNDLE, datalist=[{"image": str(head_phantom), "id": "phantom"}], output_dir=str(tmp_path))
    (row,) = list(csv.DictReader((tmp_path / "volumes.csv").open()))
    assert "phantom.nii.gz: estimated brain volume" in row["warnings"]
    assert "outside the plausible 800–2200 cm³" in row["warnings"]
    assert (tmp_path / "phantom_seg.nii.gz").is_file()
