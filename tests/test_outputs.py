import nibabel as nib
import numpy as np
import pytest

from conftest import write_volume
from neurobundles.atomic import atomic_path, ensure_writable_dir
from neurobundles.errors import OutputNotWritableError
from neurobundles.outputs import label_volumes, save_label_map


def test_label_map_keeps_the_reference_geometry_and_is_tagged(tmp_path):
    affine = np.array([[0.0, 0.0, 1.2, -80], [-1.1, 0.0, 0.0, 90], [0.0, 1.0, 0.0, -70], [0, 0, 0, 1]])
    reference = write_volume(tmp_path / "t1.nii.gz", np.ones((5, 6, 7), np.float32), affine)
    labels = np.arange(5 * 6 * 7).reshape(5, 6, 7) % 3
    out = nib.load(str(save_label_map(labels, reference, tmp_path / "seg.nii.gz")))
    assert np.allclose(out.affine, affine)
    assert out.get_data_dtype() == np.uint8
    assert out.header.get_intent()[0] == "label"
    assert np.array_equal(np.asarray(out.dataobj), labels)


def test_mgz_output_for_freesurfer_users(tmp_path):
    reference = write_volume(tmp_path / "t1.nii.gz", np.ones((4, 4, 4), np.float32))
    out = save_label_map(np.full((4, 4, 4), 1000), reference, tmp_path / "seg.mgz")
    assert np.asarray(nib.load(str(out)).dataobj).max() == 1000


def test_volumes_are_voxel_counts_times_voxel_volume():
    labels = np.zeros((10, 10, 10), int)
    labels[:2] = 1
    labels[2:5] = 2
    rows = label_volumes(labels, np.diag([1.2, 1.0, 0.5, 1.0]), {0: "bg", 1: "a", 2: "b"})
    assert rows == [
        {"label": 1, "name": "a", "voxels": 200, "volume_mm3": 120.0},
        {"label": 2, "name": "b", "voxels": 300, "volume_mm3": 180.0},
    ]


@pytest.mark.parametrize("high", [2, 300, 2035, 70000])
def test_volume_counts_match_a_naive_count_for_every_label_range(high):
    # ids in 0..32767 are counted with bincount, anything else (negative, larger) with unique
    rng = np.random.default_rng(1)
    values = np.array([0, 1, high, -1 if high == 70000 else high // 2])
    labels = rng.choice(values, size=(12, 11, 10)).astype(np.float32)
    names = {int(v): f"label {v}" for v in values}
    rows = label_volumes(labels, np.eye(4), names)
    assert {row["label"]: row["voxels"] for row in rows} == {int(v): int((labels == v).sum()) for v in values if v != 0}


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "seg.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_rewrite(tmp_path):
    target = tmp_path / "seg.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target):
        raise RuntimeError("crash")
    assert target.read_text() == "old"


def test_unwritable_output_is_reported_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="file/out: output folder is not writable"):
        ensure_writable_dir(blocker / "out")
