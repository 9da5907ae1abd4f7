"""Training datalists: Mindboggle-101 and FreeSurfer folder layouts, and train/valid/test splits."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from layouts import make_freesurfer, make_mindboggle
from neurobundles.data import ShardedCacheDataset, freesurfer_datalist, mindboggle_datalist, save_split, split_datalist


@pytest.fixture
def mindboggle(tmp_path):
    return make_mindboggle(tmp_path / "Mindboggle101_volumes")


def test_mindboggle_layout_gives_one_item_per_subject_with_its_group(mindboggle):
    items = mindboggle_datalist(mindboggle)
    assert [(d["group"], d["id"]) for d in items] == [
        ("Colin27-1", "Colin27-1"),
        ("HLN-12", "HLN-12-1"),
        ("NKI-RS-22", "NKI-RS-22-1"),
        ("OASIS-TRT-20", "OASIS-TRT-20-1"),
        ("OASIS-TRT-20", "OASIS-TRT-20-2"),
    ]
    first = items[0]
    assert first["image"] == str(mindboggle / "Colin27-1_volumes" / "Colin27-1" / "t1weighted.nii.gz")
    assert first["label"] == str(mindboggle / "Colin27-1_volumes" / "Colin27-1" / "labels.DKT31.manual+aseg.nii.gz")


def test_one_group_folder_is_a_dataset_too(mindboggle):
    items = mindboggle_datalist(mindboggle / "OASIS-TRT-20_volumes")
    assert [d["id"] for d in items] == ["OASIS-TRT-20-1", "OASIS-TRT-20-2"]


def test_groups_and_subjects_select_items(mindboggle):
    assert [d["id"] for d in mindboggle_datalist(mindboggle, groups=["HLN-12", "Colin27-1"])] == [
        "HLN-12-1",
        "Colin27-1",
    ]
    assert [d["id"] for d in mindboggle_datalist(mindboggle, subjects=["OASIS-TRT-20-2"])] == ["OASIS-TRT-20-2"]


def test_unknown_group_lists_the_available_ones(mindboggle):
    with pytest.raises(ValueError, match=r"no group MMRR-21; available: Colin27-1, HLN-12, NKI-RS-22, OASIS-TRT-20"):
        mindboggle_datalist(mindboggle, groups=["MMRR-21"])


def test_missing_label_map_names_the_file(mindboggle):
    label = mindboggle / "HLN-12_volumes" / "HLN-12-1" / "labels.DKT31.manual+aseg.nii.gz"
    label.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{label}: label map missing for subject HLN-12-1")):
        mindboggle_datalist(mindboggle)


def test_missing_image_names_the_file(mindboggle):
    image = mindboggle / "NKI-RS-22_volumes" / "NKI-RS-22-1" / "t1weighted.nii.gz"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{image}: image missing for subject NKI-RS-22-1")):
        mindboggle_datalist(mindboggle)


def _rewrite_label(path, data=None, affine=None):
    label = nib.load(str(path))
    data = np.asarray(label.dataobj) if data is None else data
    nib.save(nib.Nifti1Image(data, label.affine if affine is None else affine), str(path))


def test_label_map_of_another_shape_is_refused_naming_both_files(mindboggle):
    label = mindboggle / "HLN-12_volumes" / "HLN-12-1" / "labels.DKT31.manual+aseg.nii.gz"
    _rewrite_label(label, data=np.zeros((32, 32, 30), np.int16))
    with pytest.raises(ValueError, match=r"labels\.DKT31\.manual\+aseg\.nii\.gz: shape \(32, 32, 30\) differs from .*"):
        mindboggle_datalist(mindboggle)


def test_label_map_in_another_space_is_refused(mindboggle):
    label = mindboggle / "HLN-12_volumes" / "HLN-12-1" / "labels.DKT31.manual+aseg.nii.gz"
    _rewrite_label(label, affine=np.diag([1.0, 1.0, 1.2, 1.0]))
    with pytest.raises(ValueError, match=r"HLN-12-1/labels\.DKT31\.manual\+aseg\.nii\.gz: affine differs"):
        mindboggle_datalist(mindboggle)


def test_folder_without_groups_says_what_to_point_at(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no <group>_volumes folder .* point at Mindboggle101_volumes"):
        mindboggle_datalist(tmp_path)


def test_freesurfer_layout_fixture_is_read_as_freesurfer_writes_it(tmp_path):
    root = make_freesurfer(tmp_path / "subjects")
    items = freesurfer_datalist(root)
    assert [d["id"] for d in items] == ["bert", "ernie", "grover"]
    assert nib.aff2axcodes(nib.load(items[0]["image"]).affine) == ("L", "I", "A")


# --- splits ---------------------------------------------------------------------------------------


def _subjects(count):
    return [{"id": f"sub-{i:03d}", "image": f"{i}.nii.gz"} for i in range(count)]


def _ids(split):
    return {name: [item["id"] for item in items] for name, items in split.items()}


def test_split_sizes_follow_the_fractions():
    split = split_datalist(_subjects(101), valid=0.1, test=0.2)
    assert {name: len(items) for name, items in split.items()} == {"train": 71, "valid": 10, "test": 20}


def test_split_is_a_partition_of_the_subjects():
    split = _ids(split_datalist(_subjects(23), valid=0.2, test=3))
    every = split["train"] + split["valid"] + split["test"]
    assert sorted(every) == [f"sub-{i:03d}" for i in range(23)] and len(split["test"]) == 3


def test_split_depends_on_the_seed_not_on_the_order_subjects_were_found_in():
    subjects = _subjects(30)
    first = _ids(split_datalist(subjects, seed=7))
    assert _ids(split_datalist(list(reversed(subjects)), seed=7)) == first
    assert _ids(split_datalist(subjects, seed=8)) != first


def test_small_nonzero_fraction_still_gives_one_subject():
    assert len(split_datalist(_subjects(5), valid=0.1, test=0.1)["valid"]) == 1


def test_split_leaving_no_training_subject_is_refused():
    with pytest.raises(ValueError, match=r"3 subject\(s\): 1 for validation and 2 for testing leave none for training"):
        split_datalist(_subjects(3), valid=1, test=2)


def test_explicit_lists_fix_the_split(tmp_path):
    lists = {"train": ["sub-002", "sub-000"], "test": ["sub-001"]}
    (tmp_path / "split.json").write_text(json.dumps(lists))
    split = _ids(split_datalist(_subjects(4), lists=tmp_path / "split.json"))
    assert split == {"train": ["sub-002", "sub-000"], "valid": [], "test": ["sub-001"]}


def test_explicit_lists_naming_an_unknown_subject_are_refused():
    with pytest.raises(ValueError, match=r"subject\(s\) sub-999 not in the dataset"):
        split_datalist(_subjects(4), lists={"train": ["sub-000", "sub-999"]})


def test_subject_in_two_splits_is_refused():
    with pytest.raises(ValueError, match=r"sub-001 listed in more than one split"):
        split_datalist(_subjects(4), lists={"train": ["sub-001"], "test": ["sub-001"]})


def test_missing_split_file_says_where_it_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split\.json: split file not found; train\.json writes split\.json"):
        split_datalist(_subjects(4), lists=tmp_path / "split.json")


def test_saved_split_reproduces_the_split(tmp_path):
    split = split_datalist(_subjects(12), seed=3)
    save_split(split, tmp_path / "models" / "split.json")
    assert _ids(split_datalist(_subjects(12), lists=tmp_path / "models" / "split.json")) == _ids(split)


def test_repeated_subject_ids_are_refused():
    with pytest.raises(ValueError, match=r"subject id\(s\) a occur more than once"):
        split_datalist([{"id": "a"}, {"id": "a"}, {"id": "b"}])


def test_mindboggle_subjects_split_by_id(mindboggle):
    split = _ids(split_datalist(mindboggle_datalist(mindboggle), valid=1, test=1))
    assert len(split["train"]) == 3 and set(split["valid"] + split["test"]).isdisjoint(split["train"])


def test_group_folder_copied_elsewhere_keeps_its_ids(mindboggle, tmp_path):
    shutil.copytree(mindboggle / "HLN-12_volumes", tmp_path / "copy" / "HLN-12_volumes")
    assert [d["id"] for d in mindboggle_datalist(tmp_path / "copy")] == ["HLN-12-1"]


# --- shards for torchrun ----------------------------------------------------------------------------


def _shards(count, world_size, **kwargs):
    data = [{"id": f"sub-{i}"} for i in range(count)]
    return [
        [d["id"] for d in ShardedCacheDataset(data, rank=r, world_size=world_size, **kwargs).data] for r in range(4)
    ]


def test_shards_split_the_subjects_between_processes():
    shards = _shards(8, 4)
    assert sorted(ident for shard in shards for ident in shard) == [f"sub-{i}" for i in range(8)] and {
        len(s) for s in shards
    } == {2}


def test_uneven_subjects_are_repeated_so_every_process_steps_alike():
    shards = _shards(6, 4)
    assert {len(s) for s in shards} == {2} and {ident for shard in shards for ident in shard} == {
        f"sub-{i}" for i in range(6)
    }


def test_fewer_subjects_than_processes_still_give_each_process_one():
    assert [len(s) for s in _shards(1, 4)] == [1, 1, 1, 1]


def test_no_subjects_give_empty_shards():
    assert _shards(0, 4) == [[], [], [], []]


def test_random_split_is_monai_partition_of_the_sorted_ids_by_the_split_sizes():
    from monai.data import partition_dataset

    items = [{"id": f"s{index:02d}"} for index in (7, 3, 11, 0, 5, 9, 2, 8, 1, 4, 10, 6)]
    split = split_datalist(items, valid=2, test=0.25, seed=5)
    valid, test, train = partition_dataset(sorted(i["id"] for i in items), ratios=[2, 3, 7], shuffle=True, seed=5)
    assert [[i["id"] for i in split[name]] for name in ("valid", "test", "train")] == [
        sorted(valid),
        sorted(test),
        sorted(train),
    ]
