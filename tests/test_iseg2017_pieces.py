"""iSeg-2017 pieces of the ``unet3d_iseg2017_tissue`` bundle: data layout, subjects to segment in any naming,
labels, preprocessing, sampler and sub-volume epochs, UNet3D, non-overlapping patch inference, the challenge's
metrics and their reports, the submission writer. The bundle itself (training, evaluation and inference through its
configs, the learning test) is tested in ``tests/test_bundle_unet3d_iseg2017.py``.

The fixture is the exact public layout (Analyze pairs, 144×192×256, values 0/10/150/250) built from FreeSurfer's
fsaverage brains (``tests/layouts_iseg2017.py``); tests using it skip without the shared data.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from monai.networks.nets import VNet
from monai.transforms import Compose
from scipy import ndimage
from scipy.spatial.distance import cdist
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layouts_iseg2017 import ISEG_SHAPE, make_iseg2017, write_analyze
from neurobundles.data.iseg import FindT2d, iseg_datalist, iseg_inputs, iseg_split, iseg_subject
from neurobundles.data.splits import save_split
from neurobundles.data.subvolumes import SubVolumeDataset
from neurobundles.engines.reports import ClassScalars, MetricsReport
from neurobundles.errors import InvalidImageError
from neurobundles.inferers.patches import NonOverlappingPatchInferer, centred_padding
from neurobundles.labels.tissues import TissueLabelTable
from neurobundles.metrics import dice_per_class
from neurobundles.metrics.surface import iseg_metrics, surface_metrics
from neurobundles.networks.unet3d import UNet3D
from neurobundles.outputs.analyze import SaveAnalyzeLabelsd
from neurobundles.transforms.fraction_crop import (
    RandForegroundFractionCrop,
    RandForegroundFractionCropd,
    all_box_sums,
    summed_volume_table,
)
from neurobundles.transforms.grids import MatchGrid
from neurobundles.transforms.iseg import (
    ClassesToISegLabels,
    ISegLabelsToClasses,
    NonZeroMaskd,
    iseg_intensity,
    iseg_preprocessing,
)

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def iseg_root(tmp_path_factory: pytest.TempPathFactory, fsaverage: Path) -> Path:
    """Training subjects 1–3 and testing subject 11 in the exact iSeg-2017 layout (read-only: copy to change)."""
    return make_iseg2017(tmp_path_factory.mktemp("iseg"), fsaverage.parent, training=(1, 2, 3), testing=(11,))


@pytest.fixture(scope="module")
def subject_one(iseg_root: Path) -> dict:
    """Subject 1 through the full preprocessing: 2-channel z-scored image, classes 0–3."""
    return Compose(iseg_preprocessing())(iseg_datalist(iseg_root, subjects=[1])[0])


def _linked_copy(source: Path, target: Path) -> Path:
    """``target``: a copy of ``source`` made of hard links (cheap). Delete files in it, never write into one."""
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target / path.relative_to(source))
            except OSError:
                shutil.copy(path, target / path.relative_to(source))
    return target


def _ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


# ---------------------------------------------------------------- layout, datalist, splits


def test_fixture_has_the_public_layout_shapes_dtypes_and_values(iseg_root: Path) -> None:
    training = iseg_root / "iSeg-2017-Training"
    for number in (1, 2, 3):
        for kind, dtype in (("T1", np.int16), ("T2", np.int16), ("label", np.uint8)):
            image = nib.load(str(training / f"subject-{number}-{kind}.img"))
            assert (training / f"subject-{number}-{kind}.hdr").is_file()
            assert isinstance(image, nib.AnalyzeImage) and not isinstance(image, nib.Nifti1Pair)
            assert image.shape == (*ISEG_SHAPE, 1) and image.get_data_dtype() == dtype
    label = np.asarray(nib.load(str(training / "subject-1-label.img")).dataobj)[..., 0]
    assert set(np.unique(label).tolist()) == {0, 10, 150, 250}
    t1, t2 = (np.asarray(nib.load(str(training / f"subject-1-{k}.img")).dataobj)[..., 0] for k in ("T1", "T2"))
    means_t1 = [t1[label == v].mean() for v in (10, 150, 250)]
    means_t2 = [t2[label == v].mean() for v in (10, 150, 250)]
    assert means_t1[0] < means_t1[1] < means_t1[2]  # T1: CSF < GM < WM
    assert means_t2[0] > means_t2[1] > means_t2[2]  # T2-like: inverted
    assert sorted(p.name for p in (iseg_root / "iSeg-2017-Testing").iterdir()) == [
        "subject-11-T1.hdr",
        "subject-11-T1.img",
        "subject-11-T2.hdr",
        "subject-11-T2.img",
    ]


def test_fixture_subjects_differ(iseg_root: Path) -> None:
    labels = [
        np.asarray(nib.load(str(iseg_root / "iSeg-2017-Training" / f"subject-{n}-label.img")).dataobj)
        for n in (1, 2, 3)
    ]
    assert not np.array_equal(labels[0], labels[1]) and not np.array_equal(labels[0], labels[2])


def test_datalist_items_carry_t1_t2_label_and_id(iseg_root: Path) -> None:
    items = iseg_datalist(iseg_root)
    assert _ids(items) == ["subject-1", "subject-2", "subject-3"]
    folder = iseg_root / "iSeg-2017-Training"
    assert items[1] == {
        "image": str(folder / "subject-2-T1.img"),
        "t2": str(folder / "subject-2-T2.img"),
        "label": str(folder / "subject-2-label.img"),
        "id": "subject-2",
    }
    testing = iseg_datalist(iseg_root, "testing")
    assert _ids(testing) == ["subject-11"] and "label" not in testing[0]


def test_datalist_accepts_the_subset_folder_and_a_subject_selection(iseg_root: Path) -> None:
    items = iseg_datalist(iseg_root / "iSeg-2017-Training", subjects=["subject-3", 1])
    assert _ids(items) == ["subject-3", "subject-1"]


def test_datalist_names_a_missing_t2(iseg_root: Path, tmp_path: Path) -> None:
    root = _linked_copy(iseg_root, tmp_path / "copy")
    (root / "iSeg-2017-Training" / "subject-2-T2.img").unlink()
    with pytest.raises(FileNotFoundError, match=r"subject-2-T2\.img: T2 image of subject-2 missing"):
        iseg_datalist(root)


def test_datalist_names_a_missing_label_and_a_missing_header(iseg_root: Path, tmp_path: Path) -> None:
    root = _linked_copy(iseg_root, tmp_path / "copy")
    (root / "iSeg-2017-Training" / "subject-3-label.img").unlink()
    with pytest.raises(FileNotFoundError, match=r"subject-3-label\.img: label map of subject-3 missing"):
        iseg_datalist(root)
    (root / "iSeg-2017-Testing" / "subject-11-T1.hdr").unlink()
    with pytest.raises(FileNotFoundError, match=r"subject-11-T1\.hdr: T1 image of subject-11 missing.*hdr/\.img pair"):
        iseg_datalist(root, "testing")


def test_datalist_explains_a_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no iSeg-2017-Training folder"):
        iseg_datalist(tmp_path)
    folder = tmp_path / "iSeg-2017-Training"
    folder.mkdir()
    (folder / "subject-1-t1.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"subject-1-t1\.nii\.gz are not in iSeg-2017 naming"):
        iseg_datalist(tmp_path)


def test_datalist_refuses_a_label_off_the_t1_grid(iseg_root: Path, tmp_path: Path) -> None:
    root = _linked_copy(iseg_root, tmp_path / "copy")
    label = root / "iSeg-2017-Training" / "subject-1-label.img"
    label.unlink(), label.with_suffix(".hdr").unlink()  # hard links: never write through them
    write_analyze(label, np.zeros((144, 192, 255), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"subject-1-label\.img: shape \(144, 192, 255\) differs"):
        iseg_datalist(root)


def test_subject_item_finds_the_t2_beside_an_iseg_t1(iseg_root: Path, tmp_path: Path) -> None:
    t1 = iseg_root / "iSeg-2017-Testing" / "subject-11-T1.hdr"
    assert iseg_subject(t1) == {
        "image": str(t1.with_suffix(".img")),
        "t2": str(t1.with_name("subject-11-T2.img")),
        "id": "subject-11",
    }
    other = tmp_path / "baby_t1.img"
    shutil.copy(t1.with_suffix(".img"), other)
    with pytest.raises(ValueError, match="pass the T2 file as well"):
        iseg_subject(other)


def test_split_holds_out_subject_1_and_splits_the_rest_by_seed() -> None:
    items = [{"id": f"subject-{n}"} for n in range(1, 11)]
    split = iseg_split(items, valid=0.2, seed=0)
    assert _ids(split["test"]) == ["subject-1"]
    assert len(split["valid"]) == 2 and len(split["train"]) == 7
    assert sorted(_ids(split["train"] + split["valid"])) == sorted(f"subject-{n}" for n in range(2, 11))
    assert iseg_split(items[::-1], valid=0.2, seed=0) == split
    assert any(iseg_split(items, seed=s)["valid"] != split["valid"] for s in range(1, 6))


def test_split_file_fixes_the_split(tmp_path: Path) -> None:
    items = [{"id": f"subject-{n}"} for n in range(1, 11)]
    split = save_split(iseg_split(items, seed=3), tmp_path / "split.json")
    assert json.loads((tmp_path / "split.json").read_text())["test"] == ["subject-1"]
    assert iseg_split(items, lists=tmp_path / "split.json") == split
    with pytest.raises(ValueError, match="subject-12"):
        iseg_split(items, test=("subject-12",))


# ---------------------------------------------------------------- labels and preprocessing


def test_label_values_map_to_classes_and_back() -> None:
    values = torch.tensor([[[[0.0, 10.0], [150.0, 250.0]]]])
    classes = ISegLabelsToClasses()(values)
    assert classes.tolist() == [[[[0.0, 1.0], [2.0, 3.0]]]]
    assert ClassesToISegLabels()(classes).tolist() == values.tolist()


def test_unexpected_label_values_name_the_file_and_the_values() -> None:
    labels = MetaTensor(torch.tensor([[[[0.0, 10.0, 3.0], [150.0, 77.0, 77.0]]]]), meta={"filename_or_obj": "s-1.img"})
    with pytest.raises(InvalidImageError, match=r"s-1\.img: label values 3 \(1 voxel\), 77 \(2 voxels\) are not"):
        ISegLabelsToClasses()(labels)
    with pytest.raises(InvalidImageError, match=r"5 \(1 voxel\) are not class indices"):
        ClassesToISegLabels()(torch.tensor([[[[0.0, 5.0]]]]))


def test_preprocessing_equals_medicalzoo_by_hand(iseg_root: Path, subject_one: dict) -> None:
    image = subject_one["image"]
    assert image.shape == (2, *ISEG_SHAPE) and image.dtype == torch.float32
    t1_file = iseg_root / "iSeg-2017-Training" / "subject-1-T1.img"
    assert image.meta["filename_or_obj"] == str(t1_file)
    assert np.allclose(image.affine.numpy(), nib.load(str(t1_file)).affine)
    for channel, kind in enumerate(("T1", "T2")):
        raw = np.squeeze(nib.load(str(t1_file.with_name(f"subject-1-{kind}.img"))).get_fdata(dtype=np.float32))
        low, high = np.percentile(raw, 0.1), np.percentile(raw, 99.8)
        clipped = np.clip(raw, low, high)
        expected = (clipped - clipped.mean()) / clipped.std(ddof=1)  # MedicalZoo: torch.std (sample σ)
        assert np.abs(image[channel].numpy() - expected).max() < 1e-4
    label = np.squeeze(np.asarray(nib.load(str(t1_file.with_name("subject-1-label.img"))).dataobj))
    assert np.array_equal(subject_one["label"][0].numpy(), np.searchsorted([0, 10, 150, 250], label))
    assert "t2" not in subject_one


def test_max_min_and_nonzero_normalisations_by_hand() -> None:
    rng = np.random.default_rng(0)
    volume = np.where(rng.random((1, 20, 20, 20)) > 0.5, rng.normal(100, 20, (1, 20, 20, 20)), 0).astype(np.float32)
    clipped = np.clip(volume, np.percentile(volume, 0.1), np.percentile(volume, 99.8))
    max_min = Compose(iseg_intensity("image", "max_min"))({"image": torch.from_numpy(volume)})["image"]
    assert np.allclose(max_min.numpy(), (clipped - clipped.min()) / (clipped.max() - clipped.min()), atol=1e-5)
    nonzero = Compose(iseg_intensity("image", "nonzero"))({"image": torch.from_numpy(volume)})["image"]
    inside = clipped != 0
    expected = np.where(inside, (clipped - clipped[inside].mean()) / clipped[inside].std(), 0)
    assert np.allclose(nonzero.numpy(), expected, atol=1e-4)


def _image(shape: tuple[int, ...], zooms: tuple[float, ...], name: str, shift: float = 0.0) -> MetaTensor:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = shift
    grid = np.stack(np.meshgrid(*[np.arange(n) * z for n, z in zip(shape, zooms)], indexing="ij"))
    values = np.sin(grid[0] / 7) + np.cos(grid[1] / 5) + grid[2] / 30
    return MetaTensor(torch.from_numpy(values[None].astype(np.float32)), affine=affine, meta={"filename_or_obj": name})


def test_t2_on_another_grid_is_resampled_onto_t1() -> None:
    t1, t2 = _image((20, 24, 28), (1.0, 1.0, 1.0), "t1.img"), _image((10, 12, 14), (2.0, 2.0, 2.0), "t2.img")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = MatchGrid("resample")(t2, t1)
    assert out.shape == t1.shape and np.allclose(out.affine.numpy(), t1.affine.numpy())
    assert np.abs(out[0, 2:-2, 2:-2, 2:-2] - t1[0, 2:-2, 2:-2, 2:-2]).mean() < 0.05  # the same smooth image
    same = t1.clone()
    assert MatchGrid("refuse")(same, t1) is same  # one grid: passed through untouched


def test_t2_grid_mismatch_is_refused_with_both_files_named() -> None:
    t1, t2 = _image((20, 24, 28), (1.0, 1.0, 1.0), "t1.img"), _image((10, 12, 14), (2.0, 2.0, 2.0), "t2.img")
    with pytest.raises(InvalidImageError, match=r"t2\.img: grid \(10, 12, 14\) at \[2\.0, 2\.0, 2\.0\] mm differs"):
        MatchGrid("refuse")(t2, t1)
    far = _image((20, 24, 28), (1.0, 1.0, 1.0), "far.img", shift=500.0)
    with pytest.raises(InvalidImageError, match="covers only 0% of its field of view"):
        MatchGrid("resample")(far, t1)


def test_preprocessing_applies_the_t2_grid_policy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, shape, zoom in (("subject-1-T1", (32, 32, 32), 1.0), ("subject-1-T2", (16, 16, 16), 2.0)):
        image = nib.AnalyzeImage(rng.integers(1, 500, (*shape, 1)).astype(np.int16), affine=None)
        image.header.set_zooms((zoom, zoom, zoom, 1.0))
        image.to_filename(str(tmp_path / f"{name}.hdr"))
    item = iseg_subject(tmp_path / "subject-1-T1.img")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Compose(iseg_preprocessing(label=False))(dict(item))["image"].shape == (2, 32, 32, 32)
    with pytest.raises(InvalidImageError, match=r"subject-1-T2\.img: grid \(16, 16, 16\) at \[2\.0, 2\.0, 2\.0\] mm"):
        for transform in iseg_preprocessing(t2_grid="refuse", label=False):
            item = transform(item)


def test_a_4d_image_is_refused_naming_the_file(tmp_path: Path) -> None:
    image = nib.AnalyzeImage(np.ones((8, 8, 8, 2), dtype=np.int16), affine=None)
    image.to_filename(str(tmp_path / "subject-1-T2.hdr"))
    item = {"image": str(tmp_path / "subject-1-T2.img"), "t2": str(tmp_path / "subject-1-T2.img")}
    with pytest.raises(InvalidImageError, match=r"subject-1-T2\.img: is 4D with 2 volumes"):
        for transform in iseg_preprocessing(label=False):  # MONAI's Compose would wrap the error
            item = transform(item)


# ---------------------------------------------------------------- sub-volume sampler


def _share(label: torch.Tensor, start: np.ndarray, roi: tuple[int, ...]) -> float:
    foreground = label[0].numpy() != 0
    box = tuple(slice(int(s), int(s) + r) for s, r in zip(start, roi))
    return foreground[box].sum() / foreground.sum()


@pytest.mark.parametrize("roi", [(64, 64, 64), (128, 128, 64)])
def test_sampler_keeps_only_crops_holding_the_threshold(subject_one: dict, roi: tuple[int, ...]) -> None:
    sampler = RandForegroundFractionCropd(["image", "label"], roi_size=roi, num_samples=16, threshold=0.1)
    samples = sampler.set_random_state(0)(subject_one)
    assert len(samples) == 16
    for start, sample in zip(sampler.cropper.starts, samples):
        assert sample["image"].shape == (2, *roi) and sample["label"].shape == (1, *roi)
        share = _share(subject_one["label"], start, roi)
        assert share >= 0.1 and share == pytest.approx(sample["label"].meta["foreground_fraction"])
        assert torch.equal(
            sample["label"][0], subject_one["label"][0][tuple(slice(s, s + r) for s, r in zip(start, roi))]
        )


def test_sampler_is_seeded(subject_one: dict) -> None:
    def starts(seed: int) -> np.ndarray:
        sampler = RandForegroundFractionCropd(["image", "label"], num_samples=4).set_random_state(seed)
        sampler(subject_one)
        return sampler.cropper.starts.copy()

    assert np.array_equal(starts(7), starts(7)) and not np.array_equal(starts(7), starts(8))


def test_sampler_is_fast(subject_one: dict) -> None:
    sampler = RandForegroundFractionCropd(["image", "label"], roi_size=64, num_samples=8).set_random_state(0)
    sampler(subject_one)
    began = time.perf_counter()
    for _ in range(5):
        sampler(subject_one)
    per_call = (time.perf_counter() - began) / 5
    assert per_call < 2.0, f"{per_call:.2f} s for 8 sub-volumes of 64³ (about 0.1 s on 2 idle cores)"


def test_sampler_draws_uniformly_among_acceptable_positions() -> None:
    label = np.zeros((1, 12, 10, 8), dtype=np.float32)
    label[0, 2:6, 3:8, 1:5] = 1
    label[0, 9, 1, 6] = 2
    roi, threshold = (5, 4, 4), 0.5
    foreground = label[0] != 0
    shares = all_box_sums(summed_volume_table(foreground), roi, foreground.shape) / foreground.sum()
    acceptable = {tuple(p) for p in np.argwhere(shares >= threshold)}
    sampler = RandForegroundFractionCrop(roi, num_samples=4000, threshold=threshold, batch_size=64)
    sampler.set_random_state(1).randomize(torch.from_numpy(label))
    drawn = [tuple(s) for s in sampler.starts]
    assert set(drawn) == acceptable  # every acceptable position, and only those
    counts = np.array([drawn.count(p) for p in acceptable])
    expected = len(drawn) / len(acceptable)
    assert ((counts - expected) ** 2 / expected).sum() < 3 * len(acceptable)  # chi-square, loose


def test_sampler_finds_rare_positions_by_counting_them_all() -> None:
    label = np.zeros((1, 40, 40, 40), dtype=np.float32)
    label[0, 30:34, 30:34, 30:34] = 1
    sampler = RandForegroundFractionCrop(8, num_samples=5, threshold=1.0, batch_size=16, max_candidates=32)
    sampler.set_random_state(0).randomize(torch.from_numpy(label))
    assert all(_share(torch.from_numpy(label), s, (8, 8, 8)) == 1.0 for s in sampler.starts)


def test_sampler_relaxes_or_raises_when_no_crop_can_qualify(subject_one: dict) -> None:
    sampler = RandForegroundFractionCropd(["image", "label"], roi_size=16, num_samples=3, threshold=0.1)
    with pytest.warns(UserWarning, match=r"subject-1-label\.img: no crop of \(16, 16, 16\) holds 10%"):
        samples = sampler.set_random_state(0)(subject_one)
    best = 16**3 / (subject_one["label"] != 0).sum().item()
    assert all(s["label"].meta["foreground_fraction"] >= 0.5 * best * 0.99 for s in samples)
    strict = RandForegroundFractionCropd(["image", "label"], roi_size=16, threshold=0.1, fallback="raise")
    with pytest.raises(ValueError, match=r"subject-1-label\.img: no crop of \(16, 16, 16\) holds 10%"):
        strict(subject_one)
    with pytest.raises(ValueError, match="do not fit"):
        RandForegroundFractionCrop(300)(subject_one["image"], subject_one["label"])


# ---------------------------------------------------------------- UNet3D (and MONAI's VNet)


def test_unet3d_maps_two_contrasts_to_four_classes() -> None:
    net = UNet3D(init_filters=4).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 32, 48, 64)).shape == (1, 4, 32, 48, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.zeros(1, 2, 40, 48, 64))


def test_unet3d_parameters_and_macs_match_medicalzoo() -> None:
    net = UNet3D().eval()  # MedicalZoo: base_n_filter=8, one conv reused in each context module
    assert sum(p.numel() for p in net.parameters()) == 1_781_744
    assert net.context[0].context.first is net.context[0].context.second
    assert sum(p.numel() for p in UNet3D(share_context_weights=False).parameters()) == 2_369_264
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 2, 32, 32, 32))
    assert counter.get_total_flops() / 2 == pytest.approx(0.904e9, rel=1e-3)  # the seed's 0.9 GMACs at 32³


def test_unet3d_sums_the_segmentation_layers() -> None:
    net = UNet3D(init_filters=2, dropout=0.0)
    net(torch.randn(1, 2, 32, 32, 32)).square().mean().backward()
    for layer in (net.segment_1, net.segment_2, net.segment_4):
        assert layer.conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.eval()
        x = torch.randn(1, 2, 32, 32, 32)
        before = net(x)
        net.segment_4.conv.weight.zero_()
        net.segment_2.conv.weight.zero_()
        assert not torch.allclose(before, net(x))


def test_monai_vnet_takes_the_two_contrasts() -> None:
    net = VNet(spatial_dims=3, in_channels=2, out_channels=4).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 32, 32, 32)).shape == (1, 4, 32, 32, 32)


# ---------------------------------------------------------------- inference


class Pointwise(nn.Module):
    """A fully convolutional network whose every output voxel depends on its input voxel only."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv3d(2, 8, 1), nn.ReLU(), nn.Conv3d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_centred_padding_is_medicalzoos() -> None:
    assert centred_padding((144, 192, 256), (64, 64, 64)) == [(24, 24), (0, 0), (0, 0)]
    assert centred_padding((145, 32, 33), (32, 32, 32)) == [(8, 7), (0, 0), (16, 15)]


def test_non_overlapping_reconstruction_equals_a_full_volume_pass() -> None:
    torch.manual_seed(0)
    net, x = Pointwise().eval(), torch.randn(1, 2, 37, 45, 50)
    with torch.no_grad():
        full = net(x)
        patched = NonOverlappingPatchInferer(roi_size=16, sw_batch_size=3)(x, net)
    assert patched.shape == full.shape
    assert torch.allclose(patched, full, atol=1e-6)


def test_non_overlapping_fold_back_is_exact_and_keeps_metadata() -> None:
    x = MetaTensor(torch.randn(2, 2, 33, 20, 41), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))
    out = NonOverlappingPatchInferer(roi_size=(16, 8, 16), pad_value=0.0)(x, lambda patch: patch)
    assert torch.equal(out.as_tensor(), x.as_tensor()) and torch.equal(out.affine, x.affine)


def test_both_inference_modes_run_unet3d_on_odd_sizes() -> None:
    net, x = UNet3D(init_filters=2).eval(), torch.randn(1, 2, 40, 36, 50)
    with torch.no_grad():
        patched = NonOverlappingPatchInferer(roi_size=32, sw_batch_size=4)(x, net)
        sliding = SlidingWindowInferer(roi_size=32, sw_batch_size=4, overlap=0.5, mode="gaussian")(x, net)
    assert patched.shape == sliding.shape == (1, 4, 40, 36, 50)


# ---------------------------------------------------------------- metrics


def _cubes(shift: int) -> tuple[np.ndarray, np.ndarray]:
    truth, prediction = np.zeros((30, 30, 30), np.int64), np.zeros((30, 30, 30), np.int64)
    truth[10:20, 10:20, 10:20] = 2
    prediction[10 + shift : 20 + shift, 10:20, 10:20] = 2
    return prediction, truth


def _border_distances(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distances from each border voxel of ``a`` to the nearest border voxel of ``b`` (brute force)."""
    border = [np.argwhere(m & ~ndimage.binary_erosion(m)) * spacing for m in (a, b)]
    return cdist(border[0], border[1]).min(axis=1)


def test_metrics_of_shifted_cubes_by_hand() -> None:
    prediction, truth = _cubes(shift=2)
    result = surface_metrics(prediction, truth, classes=(2,))[2]
    assert result["dice"] == pytest.approx(0.8)  # 2 · 800 / (1000 + 1000)
    assert result["hd"] == pytest.approx(2.0)  # the moved face lies 2 voxels from the truth's face
    d_pt, d_tp = (
        _border_distances(prediction == 2, truth == 2, np.ones(3)),
        _border_distances(truth == 2, prediction == 2, np.ones(3)),
    )
    assert result["asd"] == pytest.approx((d_pt.mean() + d_tp.mean()) / 2)
    assert result["mhd"] == pytest.approx(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
    same = surface_metrics(truth, truth, classes=(2,))[2]
    assert same == {"dice": 1.0, "mhd": 0.0, "hd": 0.0, "asd": 0.0, "assd": 0.0}


def test_metrics_of_absent_classes_are_nan_or_infinite() -> None:
    prediction, truth = _cubes(shift=0)
    result = surface_metrics(prediction, truth, classes=(1, 3))
    assert np.isnan(result[1]["dice"]) and np.isnan(result[1]["mhd"])
    truth[0, 0, 0] = 3
    assert surface_metrics(prediction, truth, classes=(3,))[3]["hd"] == float("inf")


def test_metrics_equal_monai_compute_functions_with_anisotropic_spacing() -> None:
    rng = np.random.default_rng(0)
    truth = ndimage.gaussian_filter(rng.random((24, 26, 22)), 2)
    prediction = ndimage.gaussian_filter(rng.random((24, 26, 22)), 2)
    truth, prediction = np.digitize(truth, [0.48, 0.5, 0.52]), np.digitize(prediction, [0.48, 0.5, 0.52])
    spacing = (1.0, 1.5, 2.0)
    result = surface_metrics(prediction, truth, classes=(1, 2, 3), spacing=spacing)
    for c in (1, 2, 3):
        p, t = torch.from_numpy(prediction == c)[None, None], torch.from_numpy(truth == c)[None, None]
        hd95 = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
        asd = (
            compute_average_surface_distance(p, t, include_background=True, spacing=spacing)
            + compute_average_surface_distance(t, p, include_background=True, spacing=spacing)
        ) / 2
        assd = compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=spacing)
        assert result[c]["mhd"] == pytest.approx(hd95.item(), rel=1e-5)
        assert result[c]["asd"] == pytest.approx(asd.item(), rel=1e-5)
        assert result[c]["assd"] == pytest.approx(assd.item(), rel=1e-5)
        assert result[c]["dice"] == pytest.approx(dice_per_class(prediction, truth, 4)[c])


def test_iseg_metrics_row_names_the_tissues() -> None:
    prediction, truth = _cubes(shift=1)
    row = iseg_metrics(prediction[None], torch.from_numpy(truth))
    assert {"dice_CSF", "mhd_GM", "hd_WM", "asd_GM", "assd_WM", "mean_dice"} <= set(row)
    assert row["dice_GM"] == pytest.approx(0.9) and np.isnan(row["dice_CSF"])
    assert row["mean_dice"] == pytest.approx(0.9)


# ---------------------------------------------------------------- subjects to segment, in any naming


def _touch_image(path: Path, shape: tuple[int, ...] = (8, 8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones(shape, dtype=np.float32), np.eye(4)), str(path))
    return path


def test_inputs_from_an_iseg_folder_pair_each_t1_with_its_t2(iseg_root: Path) -> None:
    testing = iseg_root / "iSeg-2017-Testing"
    assert iseg_inputs([str(testing)]) == [
        {"image": str(testing / "subject-11-T1.img"), "t2": str(testing / "subject-11-T2.img"), "id": "subject-11"}
    ]
    ids = _ids(iseg_inputs(str(iseg_root)))  # the folder holding both archives: every subject, labels left out
    assert ids == ["subject-1", "subject-2", "subject-3", "subject-11"]


def test_inputs_in_bids_or_free_naming_and_explicit_pairs(tmp_path: Path) -> None:
    for name in ("sub-01_T1w.nii.gz", "sub-01_T2w.nii.gz", "baby_t1.nii", "baby_t2.nii", "mprage.nii.gz"):
        _touch_image(tmp_path / name)
    t2 = _touch_image(tmp_path / "other" / "weird.nii.gz")
    items = {item["id"]: item for item in iseg_inputs([str(tmp_path), f"{tmp_path / 'mprage.nii.gz'},{t2}"])}
    assert items["sub-01"]["t2"] == str(tmp_path / "sub-01_T2w.nii.gz")
    assert items["baby"]["t2"] == str(tmp_path / "baby_t2.nii")
    assert items["mprage"]["t2"] == str(t2)  # the pair names it; the folder alone could not
    assert set(items) == {"sub-01", "baby", "mprage"}
    assert _ids(iseg_inputs(str(tmp_path / "*_T1w.nii.gz"))) == ["sub-01"]


def test_inputs_list_a_subject_without_t2_for_the_cohort_to_record(tmp_path: Path) -> None:
    _touch_image(tmp_path / "subject-12-T1.nii.gz")
    assert iseg_inputs(str(tmp_path)) == [{"image": str(tmp_path / "subject-12-T1.nii.gz"), "id": "subject-12"}]


def test_inputs_refuse_what_cannot_be_a_subject(tmp_path: Path) -> None:
    t2 = _touch_image(tmp_path / "sub-01_T2w.nii.gz")
    with pytest.raises(ValueError, match=r"sub-01_T2w\.nii\.gz: is a T2 image by its name"):
        iseg_inputs([str(t2)])
    with pytest.raises(FileNotFoundError, match=r"missing_t2\.nii: T2 image of the pair"):
        iseg_inputs([f"{t2},{tmp_path / 'missing_t2.nii'}"])
    with pytest.raises(FileNotFoundError, match="no T1 image found"):
        iseg_inputs([str(tmp_path)])  # only a T2 in it
    with pytest.raises(FileNotFoundError, match="matches no file"):
        iseg_inputs([str(tmp_path / "*.mgz")])


def test_inputs_leave_out_the_output_folder_and_keep_ids_unique(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        _touch_image(tmp_path / folder / "T1.nii.gz"), _touch_image(tmp_path / folder / "T2.nii.gz")
    _touch_image(tmp_path / "a" / "out" / "x_T1.nii.gz")
    items = iseg_inputs([str(tmp_path / "a"), str(tmp_path / "b")], recursive=True, exclude=[tmp_path / "a" / "out"])
    assert _ids(items) == ["a_T1", "b_T1"] or _ids(items) == ["a", "b"]
    assert all(item["t2"].endswith("T2.nii.gz") for item in items)


def test_find_t2_completes_an_item_or_names_what_is_missing(iseg_root: Path, tmp_path: Path) -> None:
    testing = iseg_root / "iSeg-2017-Testing"
    item = FindT2d()({"image": str(testing / "subject-11-T1.img"), "id": "subject-11"})
    assert item["t2"] == str(testing / "subject-11-T2.img")
    named = FindT2d()({"image": str(testing / "subject-11-T1.img"), "t2": "subject-11-T2"})  # a MONAI Label id
    assert named["t2"] == str(testing / "subject-11-T2.img")
    lonely = _touch_image(tmp_path / "sub-02_T1w.nii.gz")
    with pytest.raises(InvalidImageError, match=r"sub-02_T1w\.nii\.gz: no T2 image found .*looked for sub-02_T2w"):
        FindT2d()({"image": str(lonely)})
    with pytest.raises(InvalidImageError, match=r"nope\.nii\.gz: T2 image of s not found"):
        FindT2d()({"image": str(lonely), "t2": str(tmp_path / "nope.nii.gz"), "id": "s"})


# ---------------------------------------------------------------- labels, mask, sub-volume epochs, outputs


def test_label_maps_in_class_indices_are_accepted_when_asked() -> None:
    classes = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    assert ISegLabelsToClasses(accept_classes=True)(classes) is classes
    with pytest.raises(InvalidImageError, match=r"label values 1 \(1 voxel\)"):
        ISegLabelsToClasses(accept_classes=True)(torch.tensor([[[[1.0, 10.0]]]]))  # mixed kinds
    with pytest.raises(InvalidImageError):
        ISegLabelsToClasses()(classes)


def test_non_zero_mask_covers_voxels_non_zero_in_any_contrast() -> None:
    t1, t2 = torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    t1[0, 0, 0, 0], t2[0, 1, 1, 1] = 5.0, -2.0
    mask = NonZeroMaskd(["image", "t2"])({"image": MetaTensor(t1), "t2": t2})["mask"]
    assert mask.dtype == torch.uint8 and mask.sum() == 2 and mask[0, 1, 1, 1] == 1


class _Counting(RandForegroundFractionCropd):
    calls = 0

    def __call__(self, data: dict) -> list[dict]:
        type(self).calls += 1
        return super().__call__(data)


def _volume(value: float) -> dict:
    label = torch.zeros(1, 20, 20, 20)
    label[0, 5:15, 5:15, 5:15] = 1
    return {"image": torch.full((2, 20, 20, 20), value), "label": label}


def test_sub_volume_epoch_has_its_length_mixes_subjects_and_shares_draws() -> None:
    volumes = [_volume(0.0), _volume(1.0), _volume(2.0)]
    _Counting.calls = 0
    sampler = _Counting(["image", "label"], roi_size=8, num_samples=4, threshold=0.1)
    dataset = SubVolumeDataset(volumes, sampler, num_samples=24).set_random_state(0)
    crops = [dataset[i] for i in range(len(dataset))]
    assert len(crops) == 24 and _Counting.calls == 6  # 8 crops per subject, 4 per draw
    assert [int(c["image"][0, 0, 0, 0]) for c in crops[:6]] == [0, 1, 2, 0, 1, 2]
    assert all(c["image"].shape == (2, 8, 8, 8) and c["label"].sum() >= 0.1 * 1000 for c in crops)
    assert len(SubVolumeDataset([], sampler, num_samples=24)) == 0  # MONAI Label without validation data


def test_fixed_sub_volumes_are_the_same_every_epoch() -> None:
    volumes = [_volume(0.0), _volume(1.0)]
    sampler = RandForegroundFractionCropd(["image", "label"], roi_size=8, num_samples=4, threshold=0.1)
    fixed = SubVolumeDataset(volumes, sampler, num_samples=6, fixed=True, seed=3)
    first = [fixed[i]["label"].meta["patch_index"] for i in range(6)]
    fixed.set_random_state(99)  # as MONAI's DataLoader does each epoch: fixed crops ignore it
    again = SubVolumeDataset(volumes, sampler, num_samples=6, fixed=True, seed=3)
    assert all(torch.equal(fixed[i]["label"], again[i]["label"]) for i in range(6)) and len(first) == 6


def test_submission_writer_writes_iseg_values_in_an_analyze_pair(iseg_root: Path, tmp_path: Path) -> None:
    t1 = iseg_root / "iSeg-2017-Testing" / "subject-11-T1.img"
    classes = torch.zeros(1, *ISEG_SHAPE)
    classes[0, 60:80, 90:100, 100:140] = 2
    classes[0, 70, 95, 120] = 3
    pred = MetaTensor(classes, meta={"filename_or_obj": str(t1)})
    SaveAnalyzeLabelsd("pred", tmp_path, values=(0, 10, 150, 250))({"pred": pred, "id": "subject-11"})
    written = nib.load(str(tmp_path / "subject-11-label.img"))
    assert isinstance(written, nib.AnalyzeImage) and not isinstance(written, nib.Nifti1Pair)
    assert (tmp_path / "subject-11-label.hdr").is_file()
    assert written.shape == (*ISEG_SHAPE, 1) and written.get_data_dtype() == np.uint8
    assert np.allclose(written.affine, nib.load(str(t1)).affine)
    values = np.asarray(written.dataobj)[..., 0]
    assert set(np.unique(values).tolist()) == {0, 150, 250} and values[70, 95, 120] == 250
    with pytest.raises(ValueError, match="outside the 4 values"):
        SaveAnalyzeLabelsd("pred", tmp_path, values=(0, 10, 150, 250))({"pred": pred * 3})


def test_tissue_table_leaves_csf_out_of_the_brain_volume(tmp_path: Path) -> None:
    lut = Path(__file__).resolve().parents[1] / "bundles" / "unet3d_iseg2017_tissue" / "configs" / "labels.txt"
    table = TissueLabelTable({"0": "background", "1": "CSF", "2": "GM", "3": "WM"}, lut)
    assert table.brain_values() == {2, 3} and table.names() == {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
    with pytest.raises(ValueError, match="non_brain names"):
        TissueLabelTable({"0": "background", "1": "CSF"}, lut, non_brain=("Ventricles",))


class _Engine:
    def __init__(self, output: list[dict], batch: list[dict]) -> None:
        self.state = type("State", (), {"output": output, "batch": batch, "metrics": {}})()


def test_metrics_report_writes_a_row_per_case_and_the_means(tmp_path: Path) -> None:
    prediction, truth = _cubes(shift=1)
    pred = MetaTensor(torch.from_numpy(prediction)[None].float(), affine=torch.diag(torch.tensor([2.0, 1, 1, 1])))
    report = MetricsReport(tmp_path, iseg_metrics, prefix="test_")
    engine = _Engine([{"pred": pred, "label": torch.from_numpy(truth)[None]}], [{"id": "case-1"}])
    report._score(engine)
    engine.state.output = [{"image": "x", "id": "case-2", "failure": "unreadable"}]  # failures are not scored
    report._score(engine)
    report._write(engine)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("id,dice_CSF,") and rows[1].startswith("case-1,,") and rows[2].startswith("mean,")
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["cases"]["case-1"]["dice_GM"] == pytest.approx(0.9) and summary["mean"]["dice_CSF"] is None
    assert engine.state.metrics["test_dice_GM"] == pytest.approx(0.9)
    assert summary["cases"]["case-1"]["hd_GM"] == pytest.approx(2.0)  # 1 voxel of 2 mm along the first axis


def test_class_scalars_split_a_per_class_metric() -> None:
    engine = _Engine([], [])
    engine.state.metrics["val_dice"] = torch.tensor([0.5, 0.25, 1.0])
    ClassScalars("val_dice", ["CSF", "GM", "WM"])._split(engine)
    assert engine.state.metrics["val_dice_GM"] == 0.25 and isinstance(engine.state.metrics["val_dice_WM"], float)
    with pytest.raises(ValueError, match="has 3 values but 2 class names"):
        ClassScalars("val_dice", ["CSF", "GM"])._split(engine)
