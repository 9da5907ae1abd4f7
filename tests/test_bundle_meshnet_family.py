"""The pretrained MeshNet family on real MRI: each bundle equals the published pipeline, writes FreeSurfer
ids on the correct side, and its tables add up."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurobundles.labels import LabelTable
from neurobundles.transforms import MapLabels
from neurobundles.zoo import bundle_path, load_metadata, run_workflow
from reference import reference_segmentation

pytestmark = pytest.mark.slow

FAMILY = {
    # bundle: (published model folder, dilations, activation, group norm)
    "meshnet_hcp_aparc104": ("model21_104class", [1, 2, 2, 4, 4, 8, 8, 16], "relu", False),
    "meshnet_hcp_dkt50": ("model30chan50cls", [1, 2, 4, 8, 16, 8, 4, 2, 1], "elu", False),
    "meshnet_hcp_subcortical": ("model18cls", [1, 2, 4, 8, 16, 8, 4, 2, 1], "elu", False),
    "meshnet_hcp_brainmask": ("mindgrab", [16, 8, 4, 2, 1] * 5, "gelu", True),
}


def _table(bundle: str, space: str) -> LabelTable:
    channel_def = load_metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"]
    return LabelTable(channel_def, bundle_path(bundle) / "configs" / "labels.txt", space)


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


BRAIN_BOX = 176
"""Edge of the real test volume: t1_crop's head cut to a 176³ box around its brain, conformed at that size by the
bundle and the reference alike: a third of the 256³ work through the same pipeline. The 256³ equality runs for
the tissue bundle (tests/test_bundle_meshnet_hcp_tissue.py), and the wide networks' 256³ forward pass in
tests/test_meshnet.py."""


@pytest.fixture(scope="module")
def t1_brain_box(tmp_path_factory, t1_crop) -> Path:
    """t1_crop (256³, 1 mm, LIA) cut to a 176³ box holding its whole brain (brain voxels: 62–194, 64–206, 26–206)."""
    volume = nib.load(str(t1_crop))
    start = np.array([40, 48, 28])
    data = np.asarray(volume.dataobj)[tuple(slice(s, s + BRAIN_BOX) for s in start)]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ start + volume.affine[:3, 3]
    path = tmp_path_factory.mktemp("brain_box") / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.mark.parametrize("bundle", list(FAMILY))
def test_bundle_equals_the_published_pipeline_on_t1_crop(tmp_path, shared_data, t1_brain_box, bundle):
    model, dilations, activation, group_norm = FAMILY[bundle]
    run_workflow(
        bundle,
        datalist=[{"image": str(t1_brain_box), "id": "t1"}],
        output_dir=str(tmp_path),
        **{"image_transforms#1#size": BRAIN_BOX},
    )
    written = _labels(tmp_path / "t1_seg.nii.gz")
    space = "freesurfer" if bundle != "meshnet_hcp_brainmask" else "classes"
    classes = MapLabels(_table(bundle, space).freesurfer_to_class())(written) if space == "freesurfer" else written
    weights = shared_data / "brainchop" / model / "model.pth"
    reference = reference_segmentation(t1_brain_box, weights, dilations, activation, group_norm)
    agreement = (classes == reference).mean()
    print(f"{bundle}: agrees with the published pipeline in {agreement:.6%} of voxels")
    assert agreement >= 0.999

    rows = list(csv.DictReader((tmp_path / "t1_volumes.csv").open()))
    voxel_mm3 = abs(np.linalg.det(nib.load(str(tmp_path / "t1_seg.nii.gz")).affine[:3, :3]))
    for row in rows[:-1]:
        count = int((written == int(row["label"])).sum())
        assert int(row["voxels"]) == count and float(row["volume_mm3"]) == pytest.approx(count * voxel_mm3)
    assert rows[-1]["name"] == "EstimatedTotalBrainVolume"
    assert 800_000 < float(rows[-1]["volume_mm3"]) < 2_200_000
    assert (tmp_path / "t1_qc.png").is_file() and (tmp_path / "volumes.csv").is_file()


@pytest.fixture(scope="module")
def fsaverage_subcortical(tmp_path_factory) -> Path:
    """evaluate.json on its default data (fsaverage from the hub): FreeSurfer-id label maps plus Dice."""
    out = tmp_path_factory.mktemp("subcortical")
    run_workflow("meshnet_hcp_subcortical", ["inference", "evaluate"], output_dir=str(out))
    return out


def test_hemisphere_split_puts_structures_on_their_own_side(fsaverage_subcortical, fsaverage):
    ours = _labels(fsaverage_subcortical / "fsaverage_seg.nii.gz")
    aseg = _labels(fsaverage / "mri" / "aseg.mgz")
    for left, right in [(17, 53), (10, 49), (12, 51), (3, 42)]:
        assert ((ours == left) & (aseg == left)).sum() > ((ours == left) & (aseg == right)).sum() * 10, left
        assert ((ours == right) & (aseg == right)).sum() > ((ours == right) & (aseg == left)).sum() * 10, right


def test_cohort_table_repeats_the_subject_table(fsaverage_subcortical):
    subject = {
        row["name"]: float(row["volume_mm3"])
        for row in csv.DictReader((fsaverage_subcortical / "fsaverage_volumes.csv").open())
    }
    (cohort,) = list(csv.DictReader((fsaverage_subcortical / "volumes.csv").open()))
    assert cohort["id"] == "fsaverage" and cohort["warnings"] == ""
    assert {name: float(cohort[name]) for name in subject} == subject
    assert list(cohort)[1] == "EstimatedTotalBrainVolume"


def test_evaluation_scores_every_structure_against_aseg(fsaverage_subcortical):
    import json

    dice = json.loads((fsaverage_subcortical / "dice.json").read_text())
    assert len(dice["per_class"]) == 17
    # fsaverage is an average brain, so the floors only catch a broken mapping (Dice near 0)
    assert dice["per_class"]["Cerebral-White-Matter"] > 0.5 and dice["per_class"]["Brain-Stem"] > 0.5
