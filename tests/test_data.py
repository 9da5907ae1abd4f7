"""Datalists from files, folders, globs and FreeSurfer subjects folders."""

import nibabel as nib
import numpy as np
import pytest

from conftest import write_volume
from neurobundles.data import freesurfer_datalist, image_datalist


def _img(path):
    return write_volume(path, np.ones((4, 4, 4), np.float32))


def test_folder_lists_only_images_in_order(tmp_path):
    for name in ("b.nii.gz", "a.nii", "c.mgz"):
        _img(tmp_path / name) if not name.endswith("mgz") else nib.save(
            nib.MGHImage(np.ones((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / name)
        )
    (tmp_path / "notes.txt").write_text("x")
    assert [d["id"] for d in image_datalist(tmp_path)] == ["a", "b", "c"]


def test_glob_and_files_combine_without_duplicates(tmp_path):
    a, b = _img(tmp_path / "a.nii.gz"), _img(tmp_path / "b.nii.gz")
    items = image_datalist([str(tmp_path / "*.nii.gz"), str(a)])
    assert [d["image"] for d in items] == [str(a), str(b)]


def test_colliding_names_get_their_folders(tmp_path):
    for subject in ("sub-01", "sub-02"):
        _img(tmp_path / subject / "anat" / "T1w.nii.gz")
    ids = [d["id"] for d in image_datalist(tmp_path, recursive=True)]
    assert ids == ["sub-01_anat_T1w", "sub-02_anat_T1w"]


@pytest.mark.parametrize("entry", ["missing.nii.gz", "*.nope"])
def test_nothing_found_is_an_error(tmp_path, entry):
    with pytest.raises(FileNotFoundError):
        image_datalist(str(tmp_path / entry))


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no NIfTI"):
        image_datalist(tmp_path)


def _subject(root, name, label_affine=None, label_shape=(6, 6, 6)):
    mri = root / name / "mri"
    mri.mkdir(parents=True)
    nib.save(nib.MGHImage(np.ones((6, 6, 6), np.uint8), np.eye(4)), str(mri / "orig.mgz"))
    nib.save(
        nib.MGHImage(np.ones(label_shape, np.int32), np.eye(4) if label_affine is None else label_affine),
        str(mri / "aparc+aseg.mgz"),
    )


def test_freesurfer_layout_gives_one_item_per_subject(tmp_path):
    _subject(tmp_path, "bert")
    _subject(tmp_path, "ernie")
    (tmp_path / "fsaverage_scripts").mkdir()
    items = freesurfer_datalist(tmp_path)
    assert [(d["id"], d["image"].endswith("bert/mri/orig.mgz")) for d in items] == [("bert", True), ("ernie", False)]
    assert items[0]["label"].endswith("bert/mri/aparc+aseg.mgz")


def test_freesurfer_label_in_another_space_is_refused(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 5
    _subject(tmp_path, "bert", label_affine=shifted)
    with pytest.raises(ValueError, match="affine differs"):
        freesurfer_datalist(tmp_path)


def test_freesurfer_label_of_another_shape_is_refused(tmp_path):
    _subject(tmp_path, "bert", label_shape=(6, 6, 5))
    with pytest.raises(ValueError, match="shape"):
        freesurfer_datalist(tmp_path)


def test_real_fsaverage_subjects_folder(shared_data):
    items = freesurfer_datalist(shared_data / "freesurfer")
    assert [d["id"] for d in items] == ["fsaverage", "fsaverage_xhemi"]
