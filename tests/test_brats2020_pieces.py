"""BraTS 2020 pieces of the SegNet bundle: layout and datalist, inputs to segment, axial slices, SegNet, slice
inference, metrics, on cases in the exact Kaggle layout built from real anatomy (fsaverage). The learning run goes
through the bundle itself (tests/test_bundle_segnet_brats2020.py)."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import LoadImaged
from scipy import ndimage as ndi

from layouts_brats2020 import AFFINE, SHAPE, make_brats2020
from neurobundles.data.brats import (
    BRATS_LABELS,
    BRATS_MODALITIES,
    BratsSequencesd,
    brats_datalist,
    brats_inputs,
    brats_split,
)
from neurobundles.data.masks import mask_datalist
from neurobundles.data.slices import SliceDataset, VolumeBlockSampler, min_across_ranks
from neurobundles.errors import InvalidImageError
from neurobundles.metrics.tumour import empty_distance, mean_metrics, whole_tumour_metrics
from neurobundles.networks.segnet import SegNet, encoder_parameters, freeze_encoder
from neurobundles.transforms.slices import (
    InputIntensity,
    SliceMinMax,
    VoxelSpacingd,
    WholeTumourd,
    slice_transforms,
    volume_transforms,
)

INNER = "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"
NARROW = {"channels": (4, 4, 8, 8, 8), "kernel_size": 3}


@pytest.fixture
def one_thread():
    """Run tiny networks on one thread: their small convolutions gain nothing from more, and on a busy machine
    OpenMP's waits between threads make two threads several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def brats(fsaverage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training cases 001, 002 and 355 (odd label name) and validation case 001, ``.nii`` as on Kaggle."""
    root = tmp_path_factory.mktemp("brats2020")
    return make_brats2020(root, fsaverage.parent, training=2, validation=1, include_355=True)


@pytest.fixture(scope="module")
def first_case(brats: Path) -> dict:
    """Case 001 with T1ce as a fourth channel, read as raw arrays with nibabel (the reference)."""
    item = brats_datalist(brats, modalities=("t1", "t2", "flair", "t1ce"))[0]
    arrays = {m: np.asarray(nib.load(item[m]).dataobj) for m in ("t1", "t2", "flair", "t1ce")}
    arrays["seg"] = np.asarray(nib.load(item["label"]).dataobj)
    return {"item": item, **arrays}


def _tiny_case(folder: Path, case: str, names: tuple[str, ...], label_name: str | None = "seg", shape=(6, 6, 4)):
    """A case folder of small volumes with the given file names (for layout and error tests)."""
    path = folder / case
    path.mkdir(parents=True)
    for name in names:
        nib.save(nib.Nifti1Image(np.ones(shape, np.int16), AFFINE), str(path / f"{case}_{name}.nii"))
    if label_name:
        stem = label_name if "Segm" in label_name else f"{case}_{label_name}"
        nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), AFFINE), str(path / f"{stem}.nii"))
    return path


# --- layout and datalist ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fixture_has_the_kaggle_layout_shapes_dtypes_and_labels(brats):
    training, validation = brats / INNER, brats / "BraTS2020_ValidationData/MICCAI_BraTS2020_ValidationData"
    assert sorted(p.name for p in training.iterdir()) == [
        "BraTS20_Training_001",
        "BraTS20_Training_002",
        "BraTS20_Training_355",
        "name_mapping.csv",
        "survival_info.csv",
    ]
    assert sorted(p.name for p in (training / "BraTS20_Training_355").iterdir()) == [
        "BraTS20_Training_355_flair.nii",
        "BraTS20_Training_355_t1.nii",
        "BraTS20_Training_355_t1ce.nii",
        "BraTS20_Training_355_t2.nii",
        "W39_1998.09.19_Segm.nii",
    ]
    assert sorted(p.name for p in (validation / "BraTS20_Validation_001").iterdir()) == [
        f"BraTS20_Validation_001_{m}.nii" for m in ("flair", "t1", "t1ce", "t2")
    ]
    case = training / "BraTS20_Training_001"
    for name in ("t1", "t1ce", "t2", "flair"):
        image = nib.load(case / f"BraTS20_Training_001_{name}.nii")
        assert image.shape == SHAPE and image.get_data_dtype() == np.int16
        assert np.allclose(image.affine, AFFINE) and nib.aff2axcodes(image.affine) == ("L", "P", "S")
    seg = nib.load(case / "BraTS20_Training_001_seg.nii")
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) == set(BRATS_LABELS)


@pytest.mark.slow
def test_tumour_changes_each_sequence_as_in_gliomas(first_case):
    seg = first_case["seg"]
    brain = (first_case["t1"] > 0) & (seg == 0)

    def ratio(name, label):
        return np.median(first_case[name][seg == label]) / np.median(first_case[name][brain])

    assert ratio("flair", 2) > 1.5 and ratio("t2", 2) > 1.5  # oedema bright on FLAIR and T2
    assert ratio("t1ce", 4) > 1.5  # enhancing rim
    assert ratio("t1", 1) < 0.8 and ratio("t1ce", 1) < 0.8  # necrotic core dark on T1


@pytest.mark.slow
def test_datalist_from_top_outer_inner_and_case_folders(brats):
    ids = ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_355"]
    for root in (brats, brats / "BraTS2020_TrainingData", brats / INNER):
        assert [item["id"] for item in brats_datalist(root)] == ids
    single = brats_datalist(brats / INNER / "BraTS20_Training_002")
    assert [item["id"] for item in single] == ["BraTS20_Training_002"]
    item = single[0]
    assert item["image"] == item["t1"]  # the first channel's file: the reference grid of the case
    assert Path(item["label"]).name == "BraTS20_Training_002_seg.nii"


@pytest.mark.slow
def test_case_355_label_map_is_found_under_its_release_name(brats):
    item = brats_datalist(brats / INNER / "BraTS20_Training_355")[0]
    assert Path(item["label"]).name == "W39_1998.09.19_Segm.nii"


@pytest.mark.slow
def test_validation_cases_have_no_label_and_both_splits_list_together(brats):
    validation = brats_datalist(brats, split="validation")
    assert [item["id"] for item in validation] == ["BraTS20_Validation_001"]
    assert "label" not in validation[0]
    assert len(brats_datalist(brats, split=None)) == 4
    assert brats_datalist(brats / "BraTS2020_ValidationData") == validation
    with pytest.raises(FileNotFoundError, match=r"BraTS20_Validation_001_seg\.nii"):
        brats_datalist(brats, split="validation", label=True)


def test_t1ce_can_be_a_fourth_channel_in_any_order(tmp_path):
    _tiny_case(tmp_path, "BraTS20_Training_007", ("t1", "t1ce", "t2", "flair"))
    item = brats_datalist(tmp_path, modalities=("flair", "t1ce", "t1", "t2"))[0]
    assert [Path(item[m]).name.split("_")[-1] for m in ("flair", "t1ce", "t1", "t2")] == [
        "flair.nii",
        "t1ce.nii",
        "t1.nii",
        "t2.nii",
    ]
    assert item["image"] == item["flair"]


def test_compressed_files_and_the_renamed_355_label_are_found(tmp_path):
    case = _tiny_case(tmp_path, "BraTS20_Training_355", ("t1", "t1ce", "t2", "flair"), label_name=None)
    for path in case.iterdir():
        nib.save(nib.load(path), str(path) + ".gz")
        path.unlink()
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 4), np.uint8), AFFINE), str(case / "BraTS20_Training_355_seg.nii.gz"))
    item = brats_datalist(tmp_path)[0]
    assert item["t1"].endswith("BraTS20_Training_355_t1.nii.gz")
    assert item["label"].endswith("BraTS20_Training_355_seg.nii.gz")


@pytest.mark.slow
def test_compressed_kaggle_layout_from_real_anatomy(fsaverage, tmp_path):
    make_brats2020(tmp_path, fsaverage.parent, training=[12], validation=[], compress=True)
    item = brats_datalist(tmp_path)[0]
    assert item["id"] == "BraTS20_Training_012" and item["label"].endswith("_seg.nii.gz")
    assert nib.load(item["flair"]).shape == SHAPE


def test_missing_sequence_names_the_file(tmp_path):
    _tiny_case(tmp_path, "BraTS20_Training_003", ("t1", "t1ce", "flair"))
    with pytest.raises(FileNotFoundError, match=r"BraTS20_Training_003_t2\.nii: the t2 volume of case"):
        brats_datalist(tmp_path)


def test_missing_training_label_names_the_file(tmp_path):
    _tiny_case(tmp_path, "BraTS20_Training_355", ("t1", "t1ce", "t2", "flair"), label_name=None)
    with pytest.raises(FileNotFoundError, match=r"BraTS20_Training_355_seg\.nii \(or W39_1998\.09\.19_Segm\.nii\)"):
        brats_datalist(tmp_path)
    assert "label" not in brats_datalist(tmp_path, label=False)[0]


def test_case_with_mismatched_grids_is_refused(tmp_path):
    case = _tiny_case(tmp_path, "BraTS20_Training_004", ("t1", "t1ce", "t2", "flair"))
    nib.save(nib.Nifti1Image(np.ones((6, 6, 5), np.int16), AFFINE), str(case / "BraTS20_Training_004_t2.nii"))
    with pytest.raises(ValueError, match=r"BraTS20_Training_004_t2\.nii: shape \(6, 6, 5\) differs"):
        brats_datalist(tmp_path)


def test_folder_without_cases_says_what_it_looked_for(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(FileNotFoundError, match="no BraTS case folder"):
        brats_datalist(tmp_path)


def test_label_values_outside_brats_name_the_file_and_values(tmp_path):
    path = tmp_path / "BraTS20_Training_005_seg.nii"
    nib.save(nib.Nifti1Image(np.array([0, 1, 2, 3, 4, 7], np.uint8).reshape(1, 2, 3), AFFINE), str(path))
    loaded = LoadImaged("label", image_only=True, ensure_channel_first=True)({"label": str(path)})
    with pytest.raises(ValueError, match=r"BraTS20_Training_005_seg\.nii: label values 3, 7 are not among"):
        WholeTumourd("label", allowed=BRATS_LABELS)(loaded)


def test_split_is_seeded_saved_beside_the_checkpoint_and_reproducible(tmp_path):
    items = [{"id": f"BraTS20_Training_{n:03d}"} for n in range(1, 11)]
    path = tmp_path / "models" / "split.json"
    split = brats_split(items, path, valid=2, test=2, seed=3)
    assert brats_split(items[::-1], tmp_path / "again.json", valid=2, test=2, seed=3) == split
    saved = json.loads(path.read_text())
    assert {k: len(v) for k, v in saved.items()} == {"train": 6, "valid": 2, "test": 2}
    assert brats_split(items, tmp_path / "third.json", lists=path) == split


# --- inputs to segment --------------------------------------------------------------------------------------


def _files(folder: Path, case: str, sequences=("t1", "t2", "flair"), suffix: str = ".nii.gz", sep: str = "_") -> Path:
    """A case's sequence files (small volumes) in ``folder``, named ``<case><sep><sequence><suffix>``."""
    folder.mkdir(parents=True, exist_ok=True)
    for sequence in sequences:
        nib.save(nib.Nifti1Image(np.ones((6, 6, 4), np.int16), AFFINE), str(folder / f"{case}{sep}{sequence}{suffix}"))
    return folder


def test_inputs_from_a_case_folder_a_dataset_folder_files_and_triples(tmp_path):
    root = tmp_path / "BraTS2020_ValidationData" / "MICCAI_BraTS2020_ValidationData"
    for number in (1, 2):
        _files(root / f"BraTS20_Validation_00{number}", f"BraTS20_Validation_00{number}", BRATS_MODALITIES)
    case = root / "BraTS20_Validation_001"
    expected = {"id": "BraTS20_Validation_001", "image": str(case / "BraTS20_Validation_001_t1.nii.gz")}
    expected |= {m: str(case / f"BraTS20_Validation_001_{m}.nii.gz") for m in ("t1", "t2", "flair")}
    assert brats_inputs(case) == [expected]
    assert [item["id"] for item in brats_inputs(tmp_path)] == ["BraTS20_Validation_001", "BraTS20_Validation_002"]
    assert brats_inputs([str(case / f"BraTS20_Validation_001_{m}.nii.gz") for m in ("flair", "t1", "t2")]) == [expected]
    assert brats_inputs(str(root / "*" / "*_flair.nii.gz"))[1]["id"] == "BraTS20_Validation_002"
    triple = ",".join(expected[m] for m in ("t1", "t2", "flair"))
    assert brats_inputs([triple]) == [expected]
    four = brats_inputs(case, modalities=("t1", "t2", "flair", "t1ce"))[0]
    assert four["t1ce"].endswith("_t1ce.nii.gz")


def test_inputs_in_brats_2023_and_bids_naming_and_several_cases_in_one_folder(tmp_path):
    _files(tmp_path / "flat", "BraTS-GLI-00001-000", ("t1n", "t2w", "t2f", "t1c"), sep="-")
    _files(tmp_path / "flat", "sub-01", ("T1w", "T2w", "FLAIR"))
    items = brats_inputs(tmp_path / "flat")
    assert [item["id"] for item in items] == ["BraTS-GLI-00001-000", "sub-01"]
    assert items[0]["flair"].endswith("-t2f.nii.gz") and items[1]["t2"].endswith("_T2w.nii.gz")


def test_a_case_missing_a_sequence_is_listed_and_fails_alone_when_loaded(tmp_path):
    _files(tmp_path / "BraTS20_Training_009", "BraTS20_Training_009", ("t1", "flair"))
    (item,) = brats_inputs(tmp_path)
    assert "t2" not in item
    with pytest.raises(InvalidImageError, match=r"_t1\.nii\.gz: no t2 image of case BraTS20_Training_009 beside it"):
        BratsSequencesd(["t1", "t2", "flair"])(item)


def test_inputs_name_what_they_cannot_read(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(FileNotFoundError, match="no case found"):
        brats_inputs(tmp_path / "notes")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), AFFINE), str(tmp_path / "scan.nii.gz"))
    with pytest.raises(ValueError, match=r"scan\.nii\.gz: cannot tell which case and sequence"):
        brats_inputs(tmp_path / "scan.nii.gz")
    with pytest.raises(ValueError, match="2 files; a case given by its files needs 3"):
        brats_inputs(["a.nii,b.nii"])


def test_sequences_are_found_beside_the_image_monai_label_sends_or_taken_from_the_request(tmp_path):
    folder = _files(tmp_path, "BraTS20_Training_001")
    flair = str(folder / "BraTS20_Training_001_flair.nii.gz")
    item = BratsSequencesd(["t1", "t2", "flair"])({"image": flair})
    assert item["t1"] == str(folder / "BraTS20_Training_001_t1.nii.gz") and item["flair"] == flair
    (tmp_path / "other").mkdir()
    lonely = tmp_path / "other" / "lonely_flair.nii.gz"
    shutil.copy(flair, lonely)
    named = BratsSequencesd(["t1", "t2", "flair"])(
        {
            "image": str(lonely),
            "t1": str(folder / "BraTS20_Training_001_t1.nii.gz"),
            "t2": str(folder / "BraTS20_Training_001_t2.nii.gz"),
        }
    )
    assert named["flair"] == str(lonely)
    with pytest.raises(
        InvalidImageError, match=r'no t1 image of case lonely beside it.*\{"t1": "<image id or path>"\}'
    ):
        BratsSequencesd(["t1", "t2", "flair"])({"image": str(lonely)})
    listed = BratsSequencesd(["t1", "t2", "flair"])({"image": [item["t1"], item["t2"], item["flair"]]})
    assert listed["image"] == item["t1"] and listed["flair"] == flair


def test_a_binary_task_from_a_task_folder_a_datalist_or_images(tmp_path):
    for folder, names in (("images", ("a", "b")), ("masks", ("a",))):
        for name in names:
            nib.save(
                nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), AFFINE), str(_mkdir(tmp_path / folder) / f"{name}.nii.gz")
            )
    items = mask_datalist(tmp_path)
    assert [(i["id"], "label" in i) for i in items] == [("a", True), ("b", False)]
    with pytest.raises(FileNotFoundError, match=r"b\.nii\.gz: no mask for this image"):
        mask_datalist(tmp_path, label=True)
    (tmp_path / "task.json").write_text(
        json.dumps({"training": [{"image": "images/a.nii.gz", "label": "masks/a.nii.gz"}]})
    )
    (item,) = mask_datalist(tmp_path / "task.json", label=True)
    assert item["id"] == "a" and Path(item["label"]).resolve() == (tmp_path / "masks" / "a.nii.gz").resolve()
    assert [i["id"] for i in mask_datalist([str(tmp_path / "images")], label=False)] == ["a", "b"]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- slices -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_volume(first_case) -> dict:
    """Case 001 loaded by the volume transforms (4 channels, no normalisation)."""
    return volume_transforms("minmax", modalities=("t1", "t2", "flair", "t1ce"))(first_case["item"])


@pytest.mark.slow
def test_one_item_per_axial_slice_all_155_in_order_with_channels_and_mask(first_case, first_volume):
    slices = SliceDataset([first_volume])
    assert first_volume["image"][..., 3].is_contiguous()  # laid out slice after slice
    assert len(slices) == 155 and [slices.index[i] for i in (0, 154)] == [(0, 0), (0, 154)]
    for k in (0, 77, 154):
        item = slices[k]
        assert item["slice"] == k and item["id"] == "BraTS20_Training_001"
        assert item["image"].shape == (4, 240, 240) and item["label"].shape == (1, 240, 240)
        for channel, name in enumerate(("t1", "t2", "flair", "t1ce")):
            assert np.array_equal(item["image"][channel].numpy(), first_case[name][:, :, k].astype(np.float32))
        assert np.array_equal(item["label"][0].numpy(), (first_case["seg"][:, :, k] > 0).astype(np.float32))


@pytest.mark.slow
def test_minmax_is_the_seeds_joint_min_max_of_each_slice(first_case, first_volume):
    item = slice_transforms("minmax")(SliceDataset([first_volume])[80])
    stack = np.stack([first_case[m][:, :, 80] for m in ("t1", "t2", "flair", "t1ce")]).astype(np.float64)
    expected = (stack - stack.min()) / (stack.max() - stack.min())
    assert np.allclose(item["image"].numpy(), expected, atol=1e-6)
    empty = slice_transforms("minmax")({"image": torch.zeros(3, 8, 8), "label": torch.zeros(1, 8, 8)})
    assert not empty["image"].any()


@pytest.mark.slow
def test_volume_min_max_equals_the_slice_min_max_of_every_slice(first_volume):
    volume = SliceMinMax()(first_volume["image"])
    assert isinstance(volume, MetaTensor) and torch.equal(volume.affine, first_volume["image"].affine)
    scale = slice_transforms("minmax")
    for k in (0, 40, 80, 154):
        expected = scale({"image": first_volume["image"][..., k].clone(), "label": torch.zeros(1)})["image"]
        assert torch.allclose(volume[..., k], expected, atol=1e-6)


@pytest.mark.slow
def test_zscore_standardises_each_channel_over_brain_voxels(brats, first_case):
    item = brats_datalist(brats / INNER / "BraTS20_Training_001", modalities=("t1", "flair"))[0]
    volume = volume_transforms("zscore", modalities=("t1", "flair"))(item)
    for channel, name in enumerate(("t1", "flair")):
        raw = first_case[name].astype(np.float64)
        brain = raw != 0
        expected = np.where(brain, (raw - raw[brain].mean()) / raw[brain].std(), 0)
        assert np.allclose(volume["image"][channel].numpy(), expected, atol=1e-4)


@pytest.mark.slow
def test_skip_empty_keeps_exactly_the_slices_with_brain(first_case, first_volume):
    slices = SliceDataset([first_volume], skip_empty=True)
    with_brain = [k for k in range(155) if first_case["t1"][:, :, k].any() or first_case["flair"][:, :, k].any()]
    assert [s for _, s in slices.index] == with_brain and len(with_brain) < 155


@pytest.mark.slow
def test_tumour_repeats_raise_the_tumour_fraction_as_documented(first_volume):
    plain = SliceDataset([first_volume], skip_empty=True)
    tumour = plain.stats["tumour_slices"]
    others = len(plain) - tumour
    for repeats in (1, 3):
        slices = SliceDataset([first_volume], skip_empty=True, tumour_repeats=repeats)
        assert math.isclose(slices.tumour_fraction, repeats * tumour / (repeats * tumour + others))
    assert SliceDataset([first_volume], skip_empty=True, tumour_repeats=3).tumour_fraction > plain.tumour_fraction


def _counting_volumes(count: int, loads: list[int]) -> Dataset:
    """Small volumes (2 channels, 8 × 8 × 5) whose loading is counted; slice 2 of every case holds tumour."""

    def load(item):
        loads.append(item["case"])
        image = torch.full((2, 8, 8, 5), float(item["case"] + 1))
        label = torch.zeros((1, 8, 8, 5))
        label[..., 2] = 1
        return {"image": image, "label": label, "id": f"case{item['case']}"}

    return Dataset([{"case": c} for c in range(count)], transform=load)


def test_block_sampler_reads_each_case_once_per_epoch():
    loads: list[int] = []
    slices = SliceDataset(_counting_volumes(6, loads), cached_volumes=2)
    assert sorted(loads) == list(range(6))  # the index is built with one read per case
    loads.clear()
    sampler = VolumeBlockSampler(slices, volumes_per_block=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(slices)))
    for item in order:
        assert slices[item]["image"][0, 0, 0] == slices.case_of(item) + 1
    assert len(loads) == len(set(loads)) <= 6  # no case read twice (the last ones read may still be cached)
    assert list(sampler) != order  # the next epoch shuffles differently


def test_slices_of_a_plain_dataset_in_random_order_reload_cases():
    loads: list[int] = []
    slices = SliceDataset(_counting_volumes(6, loads), cached_volumes=2)
    loads.clear()
    for item in np.random.default_rng(0).permutation(len(slices)):
        slices[int(item)]
    assert len(loads) > 6  # what the block sampler avoids


def test_volume_normalisation_is_the_seeds_slice_min_max_or_a_brain_z_score():
    volume = torch.rand(2, 8, 8, 5) * torch.arange(1, 6).float()
    volume[:, :2] = 0
    minmax = InputIntensity("minmax")(volume)
    scale = slice_transforms("minmax")
    for k in range(5):
        assert torch.allclose(
            minmax[..., k], scale({"image": volume[..., k].clone(), "label": torch.zeros(1)})["image"]
        )
    zscore = InputIntensity("zscore")(volume)
    brain = volume[0] != 0
    assert zscore[0][brain].mean().abs() < 1e-5 and (zscore[0][~brain] == 0).all()
    with pytest.raises(ValueError, match="normalise must be one of minmax, zscore"):
        InputIntensity("percentile")


def test_voxel_spacing_is_inverted_exactly_and_ignores_monai_labels_image_path():
    image = MetaTensor(torch.rand(1, 12, 10, 6), affine=torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0])))
    spacing = VoxelSpacingd("image", pixdim=[1.0, 1.0, 0.0])
    out = spacing({"image": image, "image_path": "/studies/case_flair.nii.gz"})  # MONAI's Spacingd fails here
    assert out["image"].shape == (1, 18, 14, 6) and out["image_path"] == "/studies/case_flair.nii.gz"
    assert torch.allclose(out["image"].pixdim, torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    back = spacing.inverse({"image": out["image"]})["image"]
    assert back.shape == image.shape and torch.allclose(back.affine, image.affine)
    same = VoxelSpacingd("image", pixdim=[1.5, 1.5, 0.0])({"image": image})["image"]
    assert torch.equal(same.as_tensor(), image.as_tensor())  # already on the grid: untouched


def test_block_sampler_serves_a_fixed_number_of_items_for_every_process():
    slices = SliceDataset(_counting_volumes(3, []))
    for count in (7, 15, 40):
        order = list(VolumeBlockSampler(slices, volumes_per_block=1, num_items=count))
        assert len(order) == count and set(order) <= set(range(len(slices)))
    assert len(VolumeBlockSampler(slices, num_items=7)) == 7 and min_across_ranks(12) == 12


# --- SegNet -------------------------------------------------------------------------------------------------


def test_seed_segnet_restores_15_by_15_at_the_first_unpooling_and_outputs_logits(one_thread):
    network = SegNet().eval()
    sizes: list[tuple[int, ...]] = []
    network.unpool.register_forward_hook(lambda module, args, output: sizes.append(tuple(output.shape[2:])))
    with torch.no_grad():
        out = network(torch.randn(1, 3, 240, 240))
    assert out.shape == (1, 1, 240, 240)
    assert sizes == [(15, 15), (30, 30), (60, 60), (120, 120), (240, 240)]
    last = network.decoder[-1][-1]
    assert list(last.children()) == [last.conv]  # the last convolution is followed by nothing: logits
    with torch.no_grad():
        last.conv.bias.fill_(-1000.0)
        assert network(torch.randn(1, 3, 64, 64)).max() < 0  # no sigmoid or ReLU could give negative outputs


def test_seed_segnet_parameter_count():
    network = SegNet()
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    encoder = sum(25 * a * b + b + 2 * b for a, b in itertools.pairwise(widths))
    decoder_pairs = [(512, 512)] * 5 + [(512, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64)]
    decoder = sum(25 * a * b + b + 2 * b for a, b in decoder_pairs) + 25 * 64 * 1 + 1
    assert sum(p.numel() for p in network.parameters()) == encoder + decoder == 81_745_409


@pytest.mark.parametrize("size", [(240, 240), (250, 231), (32, 32)])
def test_torchscript_equals_eager(size, tmp_path, one_thread):
    network = SegNet(**NARROW).eval()
    scripted = torch.jit.script(network)
    torch.jit.save(scripted, str(tmp_path / "segnet.ts"))
    loaded = torch.jit.load(str(tmp_path / "segnet.ts"))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(loaded(x), network(x), atol=1e-6)


def test_too_small_input_is_refused_with_the_minimum(one_thread):
    with pytest.raises(ValueError, match="at least 32 pixels"):
        SegNet(**NARROW)(torch.randn(1, 3, 31, 64))


def test_frozen_encoder_is_unchanged_by_an_optimiser_step(one_thread):
    torch.manual_seed(0)
    network = freeze_encoder(SegNet(**NARROW))
    encoder_before = [t.clone() for t in network.encoder.state_dict().values()]
    decoder_before = [p.clone() for p in network.decoder.parameters()]
    optimiser = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    network.train()
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(25.0))
    for _ in range(2):
        optimiser.zero_grad()
        loss(network(torch.randn(4, 3, 64, 64)), (torch.rand(4, 1, 64, 64) > 0.8).float()).backward()
        optimiser.step()
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, network.encoder.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(decoder_before, network.decoder.parameters()))
    freeze_encoder(network, False)
    assert all(p.requires_grad for p in encoder_parameters(network)) and network.frozen_levels == 0


def test_two_class_output_is_the_mask_cut_at_the_threshold_with_the_same_weights(one_thread):
    torch.manual_seed(0)
    logits = SegNet(**NARROW).eval()
    classes = SegNet(**NARROW, two_class_threshold=math.log(25)).eval()
    classes.load_state_dict(logits.state_dict())
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        z, two = logits(x), classes(x)
    assert two.shape == (2, 2, 40, 48) and torch.equal(two[:, 1:], z)
    assert torch.equal(two.argmax(1, keepdim=True), (z > math.log(25)).long())
    assert torch.allclose(two.softmax(1)[:, 1:], torch.sigmoid(z - math.log(25)), atol=1e-6)
    with pytest.raises(ValueError, match="needs out_channels=1"):
        SegNet(out_channels=2, two_class_threshold=0.0)


def test_a_network_built_frozen_keeps_its_encoder_in_eval_mode(one_thread):
    network = SegNet(**NARROW, frozen_levels=5).train()
    assert network.frozen_levels == 5 and not any(p.requires_grad for p in encoder_parameters(network))
    assert not any(level.training for level in network.encoder) and all(level.training for level in network.decoder)


# --- 3D inference -------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(240, 240, 31), (250, 231, 17)])
def test_slice_inferer_gives_a_3d_mask_in_the_input_grid(shape, one_thread):
    network = SegNet(channels=(2, 2, 2, 2, 2), kernel_size=3).eval()
    affine = torch.as_tensor(AFFINE)
    volume = MetaTensor(torch.rand(1, 3, *shape), affine=affine)
    inferer = SliceInferer(roi_size=(-1, -1), spatial_dim=2, sw_batch_size=32, progress=False)
    with torch.no_grad():
        logits = inferer(volume, network)
        assert logits.shape == (1, 1, *shape)
        for k in (0, shape[2] // 2, shape[2] - 1):
            assert torch.allclose(logits[..., k], network(volume[..., k].as_tensor()), atol=1e-5)
    assert torch.allclose(logits.affine, affine)
    mask = (logits > 0).float()
    assert mask.shape[2:] == volume.shape[2:]


# --- metrics ------------------------------------------------------------------------------------------------


def _edges(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return np.argwhere(padded & ~ndi.binary_erosion(padded))


def test_metrics_equal_hand_computed_values():
    truth = np.zeros((20, 20, 12), bool)
    truth[4:12, 5:13, 3:8] = True
    prediction = np.zeros_like(truth)
    prediction[6:14, 5:11, 3:9] = True
    spacing = (1.0, 1.0, 2.5)
    metrics = whole_tumour_metrics(prediction, truth, spacing=spacing)
    tp = (truth & prediction).sum()
    fp, fn = (prediction & ~truth).sum(), (truth & ~prediction).sum()
    tn = truth.size - tp - fp - fn
    distances = np.sqrt(
        (((_edges(prediction)[:, None, :] - _edges(truth)[None, :, :]) * np.asarray(spacing)) ** 2).sum(-1)
    )
    hd95 = max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))
    assert metrics["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert metrics["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert metrics["specificity"] == pytest.approx(tn / (tn + fp))
    assert metrics["hd95"] == pytest.approx(hd95, abs=1e-4)


def test_metrics_read_spacing_from_the_truth_and_accept_raw_brats_labels():
    truth = np.zeros((1, 16, 16, 10), np.uint8)
    truth[0, 4:9, 4:9, 2:6] = 2
    truth[0, 6, 6, 3] = 4
    prediction = np.zeros((16, 16, 10), bool)
    prediction[5:10, 4:9, 2:6] = True
    meta_truth = MetaTensor(torch.as_tensor(truth), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    assert whole_tumour_metrics(prediction, meta_truth)["hd95"] == pytest.approx(
        whole_tumour_metrics(prediction, truth, spacing=(2, 2, 2))["hd95"]
    )


def test_empty_mask_conventions():
    empty = np.zeros(SHAPE, bool)
    tumour = empty.copy()
    tumour[100:110, 100:110, 70:80] = True
    diagonal = empty_distance(SHAPE, (1, 1, 1))
    assert diagonal == pytest.approx(373.13, abs=0.01)  # BraTS's value
    both = whole_tumour_metrics(empty, empty)
    assert both["dice"] == 1 and both["hd95"] == 0 and math.isnan(both["sensitivity"]) and both["specificity"] == 1
    missed = whole_tumour_metrics(empty, tumour)
    assert missed["dice"] == 0 and missed["hd95"] == pytest.approx(diagonal) and missed["sensitivity"] == 0
    invented = whole_tumour_metrics(tumour, empty)
    assert invented["dice"] == 0 and invented["hd95"] == pytest.approx(diagonal)
    assert math.isnan(invented["sensitivity"]) and invented["specificity"] == pytest.approx(1 - 1000 / empty.size)
    means = mean_metrics([both, missed, invented])
    assert means["dice"] == pytest.approx(1 / 3) and means["sensitivity"] == 0 and means["sensitivity_cases"] == 1
