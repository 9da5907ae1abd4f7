"""MTNeuro Task 2 pieces: synchronised augmentation, smp-defined metrics, the U-Net baseline (learning runs through
the bundles: tests/test_mtneuro_task2_bundles.py)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import from_engine

from bossdb_emulator import task2_cache
from neurobundles.data.cutouts import LoadCutoutd, cutout_datalist, save_cutout_labels
from neurobundles.data.mtneuro import MTNeuroDataset, mtneuro_augmentation
from neurobundles.metrics.pixels import (
    PixelMetric,
    PixelMetricHandler,
    PixelScores,
    accuracy,
    f1_score,
    foreground_balanced_accuracy,
    get_stats,
    iou_score,
    mtneuro_report,
)
from neurobundles.networks.mtneuro_unet import MTNeuroUNet, convert_mtneuro_state_dict


@pytest.fixture(scope="session")
def task2(tmp_path_factory):
    return task2_cache(tmp_path_factory.mktemp("mtneuro"))


# ---------------------------------------------------------------------------------------------------------------
# Augmentation moves image and mask together
# ---------------------------------------------------------------------------------------------------------------
def _pair(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)[None]
    return {"image": image, "label": (image > 0.7).astype(np.int64) + (image > 0.9)}


@pytest.mark.parametrize("shape", [(32, 24), (32, 24, 8)])
def test_augmentation_moves_image_and_mask_together(shape):
    augment = mtneuro_augmentation(prob=0.5)
    changed = 0
    for seed in range(12):
        augment.set_random_state(seed)
        item = _pair(shape, seed)
        out = augment(dict(item))
        image, label = np.asarray(out["image"]), np.asarray(out["label"])
        np.testing.assert_array_equal(label, (image > 0.7).astype(np.int64) + (image > 0.9))
        changed += image.shape != item["image"].shape or not np.array_equal(image, item["image"])
    assert changed >= 8  # most draws flip or rotate


def test_a_flipped_image_flips_its_mask():
    item = _pair((16, 16))
    flip = mtneuro_augmentation(prob=1.0).transforms[0]  # RandFlipd over axis 0, always
    out = flip(dict(item))
    np.testing.assert_array_equal(np.asarray(out["image"]), item["image"][:, ::-1])
    np.testing.assert_array_equal(np.asarray(out["label"]), item["label"][:, ::-1])


def test_3d_augmentation_keeps_the_slice_order():
    image = np.zeros((1, 16, 16, 8), np.float32)
    image[0, 2, 5] = np.arange(8)  # one voxel column along z carries the slice index
    augment = mtneuro_augmentation(prob=1.0)
    augment.set_random_state(3)
    out = np.asarray(augment({"image": image, "label": image.astype(np.int64)})["image"])
    column = out[0][np.nonzero(out[0, ..., 7])][0]  # the moved column, still in slice order
    np.testing.assert_array_equal(column, np.arange(8))


@pytest.mark.slow
def test_dataset_items_augment_in_sync(task2):
    plain = MTNeuroDataset("task2_3D_4class", "val", task2["cache"], offline=True)
    augmented = MTNeuroDataset("task2_3D_4class", "val", task2["cache"], offline=True,
                               transform=mtneuro_augmentation(prob=1.0))  # fmt: skip
    before = plain[5]
    for seed in range(5):  # both flips and a half turn cancel out; take a draw that moves the voxels
        augmented.transform.set_random_state(seed)
        after = augmented[5]
        if not np.array_equal(np.asarray(after["image"]), before["image"]):
            break
    assert not np.array_equal(np.asarray(after["image"]), before["image"])

    def joint(item):  # (class, grey level) of every voxel; a shared permutation keeps it, separate ones do not
        return np.sort(np.asarray(item["label"]).ravel() * 256 + np.rint(np.asarray(item["image"]) * 255).ravel())

    np.testing.assert_array_equal(joint(after), joint(before))


# ---------------------------------------------------------------------------------------------------------------
# Metrics: smp's definitions on a hand-checked example
# ---------------------------------------------------------------------------------------------------------------
# two 2×3 images, three classes; the counts below were worked out by hand
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
OUTPUT = torch.tensor([[[0, 1, 1], [1, 2, 0]], [[0, 0, 0], [0, 0, 2]]])
TP = [[1, 2, 1], [5, 0, 0]]
FP = [[1, 1, 0], [0, 0, 1]]
FN = [[1, 0, 1], [1, 0, 0]]
TN = [[3, 3, 4], [0, 6, 5]]


def test_counts_per_image_and_class_by_hand():
    tp, fp, fn, tn = get_stats(OUTPUT, TARGET, num_classes=3)
    assert (tp.tolist(), fp.tolist(), fn.tolist(), tn.tolist()) == (TP, FP, FN, TN)


def test_f1_iou_and_accuracy_by_hand():
    stats = get_stats(OUTPUT, TARGET, num_classes=3)
    # F1 = 2tp / (2tp + fp + fn); class 1 is absent from image 2 in both maps: 0/0 → 1 (smp's zero_division)
    f1 = [[2 / 4, 4 / 5, 2 / 3], [10 / 11, 1.0, 0.0]]
    torch.testing.assert_close(f1_score(*stats), torch.tensor(f1, dtype=torch.float64))
    torch.testing.assert_close(f1_score(*stats, reduction="macro-imagewise").item(), (0.5 + 10 / 11 + 1.8 + 2 / 3) / 6)
    torch.testing.assert_close(f1_score(*stats, reduction="micro").item(), 18 / 24)  # = pixel accuracy 9/12
    torch.testing.assert_close(f1_score(*stats, reduction="macro").item(), (12 / 15 + 4 / 5 + 2 / 4) / 3)
    torch.testing.assert_close(f1_score(*stats, reduction="micro-imagewise").item(), (8 / 12 + 10 / 12) / 2)
    iou = [[1 / 3, 2 / 3, 1 / 2], [5 / 6, 1.0, 0.0]]
    torch.testing.assert_close(iou_score(*stats), torch.tensor(iou, dtype=torch.float64))
    torch.testing.assert_close(iou_score(*stats, reduction="macro-imagewise").item(), 5 / 9)
    acc = [[4 / 6, 5 / 6, 5 / 6], [5 / 6, 1.0, 5 / 6]]
    torch.testing.assert_close(accuracy(*stats), torch.tensor(acc, dtype=torch.float64))
    torch.testing.assert_close(foreground_balanced_accuracy(*stats).item(), (11 / 12 + 10 / 12) / 2)


def test_mtneuro_report_by_hand():
    report = mtneuro_report(*get_stats(OUTPUT, TARGET, 3), class_names=["background", "vessel", "cell"])
    expected = {
        "accuracy/background": 3 / 4, "accuracy/vessel": 11 / 12, "accuracy/cell": 5 / 6,
        "balanced_accuracy_no_background": 7 / 8,
        "f1/background": (0.5 + 10 / 11) / 2, "f1/vessel": 0.9, "f1/cell": 1 / 3,
        "f1/mean": ((0.5 + 10 / 11) / 2 + 0.9 + 1 / 3) / 3,
        "iou/background": 7 / 12, "iou/vessel": 5 / 6, "iou/cell": 1 / 4, "iou/mean": 5 / 9,
        "f1_pooled/background": 12 / 15, "f1_pooled/vessel": 4 / 5, "f1_pooled/cell": 2 / 4,
        "iou_pooled/background": 6 / 9, "iou_pooled/vessel": 2 / 3, "iou_pooled/cell": 1 / 3,
    }  # fmt: skip
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == pytest.approx(value), key


def test_case_scores_average_to_the_report_by_hand():
    """Per-image scores (a report table's rows) average to MTNeuro's imagewise numbers."""
    names = ["background", "vessel", "cell"]
    rows = [PixelScores(names)(OUTPUT[i][None].float(), TARGET[i][None]) for i in range(2)]
    report = mtneuro_report(*get_stats(OUTPUT, TARGET, 3), class_names=names)
    for key in rows[0]:
        if key.endswith("/foreground"):
            name = key.split("/")[0]
            assert np.mean([row[key] for row in rows]) == pytest.approx(
                (report[f"{name}/vessel"] + report[f"{name}/cell"]) / 2
            )
        else:
            assert np.mean([row[key] for row in rows]) == pytest.approx(report[key]), key
    assert rows[1]["f1/vessel"] == 1.0 and rows[1]["f1/cell"] == 0.0  # absent from both maps: 1; missed: 0
    assert PixelScores({"0": "background", "1": "vessel", "2": "cell"}).class_names == names


def test_ignored_pixels_count_nowhere():
    target = TARGET.clone()
    target[0, 0, 1] = 255  # the only fp of class 1 and fn of class 0 in image 1
    tp, fp, fn, tn = get_stats(OUTPUT, target, 3, ignore_index=255)
    assert (tp[0].tolist(), fp[0].tolist(), fn[0].tolist(), tn[0].tolist()) == (
        [1, 2, 1],
        [1, 0, 0],
        [0, 0, 1],
        [3, 3, 3],
    )


def test_pixel_metric_takes_channel_first_scores_or_labels():
    logits = torch.nn.functional.one_hot(OUTPUT, 3).permute(0, 3, 1, 2).float() * 5
    metric = PixelMetric(3, "f1", "macro-imagewise")
    metric(logits, TARGET[:, None])
    by_labels = PixelMetric(3, "f1", "macro-imagewise")
    by_labels(OUTPUT[:, None].float(), TARGET[:, None])
    assert metric.aggregate().item() == pytest.approx(by_labels.aggregate().item())
    assert metric.aggregate().item() == pytest.approx(((0.5 + 10 / 11) / 2 + 0.9 + 1 / 3) / 3)
    vessel = PixelMetric(3, "iou", class_index=1)
    vessel(list(OUTPUT[:, None]), list(TARGET[:, None]))  # decollated batches, as MONAI engines give them
    assert vessel.aggregate().item() == pytest.approx(5 / 6)
    assert metric.report(["b", "v", "c"])["iou/mean"] == pytest.approx(5 / 9)


def test_pixel_metric_handler_reports_to_an_ignite_engine():
    batches = [{"pred": OUTPUT[i : i + 1, None], "label": TARGET[i : i + 1, None]} for i in range(2)]
    engine = Engine(lambda engine, batch: batch)
    PixelMetricHandler(3, "f1", output_transform=from_engine(["pred", "label"])).attach(engine, "f1_mean")
    PixelMetricHandler(3, "accuracy", class_index=2, output_transform=from_engine(["pred", "label"])).attach(
        engine, "accuracy_cell"
    )
    state = engine.run(batches)
    assert state.metrics["f1_mean"] == pytest.approx(((0.5 + 10 / 11) / 2 + 0.9 + 1 / 3) / 3)
    assert state.metrics["accuracy_cell"] == pytest.approx(5 / 6)


# ---------------------------------------------------------------------------------------------------------------
# The U-Net baseline
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spatial_dims", "classes", "parameters"),
    [(2, 3, 1_928_355), (2, 4, 1_928_388), (3, 3, 5_603_043), (3, 4, 5_603_076)],
)
def test_parameter_counts(spatial_dims, classes, parameters):
    net = MTNeuroUNet(spatial_dims=spatial_dims, out_channels=classes)
    assert sum(p.numel() for p in net.parameters()) == parameters


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (256, 256)), (3, (64, 64, 8))])
def test_output_keeps_the_sample_grid(spatial_dims, shape):
    with torch.no_grad():
        out = MTNeuroUNet(spatial_dims, out_channels=4).eval()(torch.rand(2, 1, *shape))
    assert out.shape == (2, 4, *shape)


def test_four_levels_of_conv_relu_batchnorm_with_pooling_and_transposed_convolutions():
    net = MTNeuroUNet(3, out_channels=3)
    assert sum(isinstance(m, torch.nn.MaxPool3d) for m in net.modules()) == 1  # one module, used 3 times
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [(u.in_channels, u.out_channels, u.kernel_size, u.stride) for u in ups] == [
        (256, 128, (2, 2, 2), (2, 2, 2)), (128, 64, (2, 2, 2), (2, 2, 2)), (64, 32, (2, 2, 2), (2, 2, 2)),
    ]  # fmt: skip
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128, 256, 256, 128, 128, 64, 64, 32, 32]
    block = net.encoder[0][0]
    assert [type(m).__name__ for m in (block.conv, *block.adn.children())] == ["Conv3d", "ReLU", "BatchNorm3d"]


def test_indivisible_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"not divisible by 8.*DivisiblePad\(k=8\)"):
        MTNeuroUNet(2)(torch.rand(1, 1, 60, 64))


def test_mtneuro_checkpoints_convert_tensor_for_tensor():
    net = MTNeuroUNet(2, out_channels=4, channels=(4, 8, 16, 32))
    reference_names = {  # MTNeuro's names for a few of our tensors
        "down_blocks.0.conv1.weight": "encoder.0.0.conv.weight",
        "down_blocks.3.norm2.running_var": "encoder.3.1.adn.N.running_var",
        "up_blocks.0.up.weight": "decoder.0.up.conv.weight",
        "up_blocks.2.norm0.bias": "decoder.2.up.adn.N.bias",
        "up_blocks.1.conv2.bias": "decoder.1.conv_2.conv.bias",
        "up_blocks.1.norm1.weight": "decoder.1.conv_1.adn.N.weight",
        "conv_final.weight": "final_conv.conv.weight",
    }
    state = net.state_dict()
    converted = convert_mtneuro_state_dict(
        {**{ref: state[ours] for ref, ours in reference_names.items()}, "up_blocks.0.conv0.weight": torch.zeros(1)}
    )
    assert converted.keys() == set(reference_names.values())
    with pytest.raises(KeyError, match="not a tensor of MTNeuro's UNet"):
        convert_mtneuro_state_dict({"encoder.weight": torch.zeros(1)})


def test_mtneuro_3d_kernels_are_reordered_from_zxy_to_yxz():
    kernel = torch.arange(2 * 27, dtype=torch.float32).reshape(2, 1, 3, 3, 3)  # [out, in, z, x, y]
    converted = convert_mtneuro_state_dict({"down_blocks.0.conv1.weight": kernel}, spatial_dims=3)
    torch.testing.assert_close(converted["encoder.0.0.conv.weight"], kernel.permute(0, 1, 4, 3, 2))


# ---------------------------------------------------------------------------------------------------------------
# Cutouts as inference inputs: read in every format, labels written back like their source
# ---------------------------------------------------------------------------------------------------------------
def _write_cutouts(folder, stack: np.ndarray) -> dict[str, np.ndarray]:
    """``stack`` ([z, y, x] uint8) as .npy, TIFF and NIfTI ([y, x, z]); returns each file's [Y, X, Z] reading."""
    from PIL import Image

    folder.mkdir()
    np.save(folder / "a.npy", stack)
    pages = [Image.fromarray(page) for page in stack]
    pages[0].save(folder / "b.tif", save_all=True, append_images=pages[1:])
    nib.save(nib.Nifti1Image(np.moveaxis(stack, 0, -1), np.diag([2.0, 2.0, 3.0, 1.0])), str(folder / "c.nii.gz"))
    volume = np.moveaxis(stack, 0, -1)
    return {"a.npy": volume, "b.tif": volume, "c.nii.gz": volume}


def test_cutouts_load_as_channel_first_slices_in_every_format(tmp_path):
    stack = np.random.default_rng(0).integers(0, 256, (3, 24, 40), dtype=np.uint8)
    expected = _write_cutouts(tmp_path / "in", stack)
    for name, volume in expected.items():
        item = LoadCutoutd("image")({"image": str(tmp_path / "in" / name)})
        assert item["image"].shape == (1, 24, 40, 3) and item["image"].dtype == torch.float32, name
        np.testing.assert_allclose(item["image"][0].numpy(), volume / 255.0, rtol=1e-6)
        assert "warnings" not in item
    nifti = LoadCutoutd("image")({"image": str(tmp_path / "in" / "c.nii.gz")})["image"]
    np.testing.assert_allclose(nifti.affine.numpy(), np.diag([2.0, 2.0, 3.0, 1.0]))


def test_labels_are_written_in_their_source_format_and_grid(tmp_path):
    from PIL import Image, ImageSequence

    stack = np.random.default_rng(1).integers(0, 256, (3, 24, 40), dtype=np.uint8)
    expected = _write_cutouts(tmp_path / "in", stack)
    labels = np.random.default_rng(2).integers(0, 4, (24, 40, 3)).astype(np.uint8)
    (tmp_path / "out").mkdir()
    np.testing.assert_array_equal(
        np.load(save_cutout_labels(labels, tmp_path / "in" / "a.npy", tmp_path / "out" / "a.npy")),
        np.moveaxis(labels, -1, 0),
    )
    with Image.open(save_cutout_labels(labels, tmp_path / "in" / "b.tif", tmp_path / "out" / "b.tif")) as tiff:
        pages = np.stack([np.asarray(page) for page in ImageSequence.Iterator(tiff)])
    np.testing.assert_array_equal(pages, np.moveaxis(labels, -1, 0))
    written = nib.load(str(save_cutout_labels(labels, tmp_path / "in" / "c.nii.gz", tmp_path / "out" / "c.nii.gz")))
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)
    assert np.allclose(written.affine, nib.load(str(tmp_path / "in" / "c.nii.gz")).affine)
    assert set(expected) == {"a.npy", "b.tif", "c.nii.gz"}
    one_slice = tmp_path / "in" / "slice.npy"
    np.save(one_slice, stack[0])
    assert np.load(save_cutout_labels(labels[..., :1], one_slice, tmp_path / "out" / "s.npy")).shape == (24, 40)


def test_other_grey_levels_are_rescaled_with_a_warning(tmp_path):
    np.save(tmp_path / "deep.npy", np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8) * 100)
    item = LoadCutoutd("image")({"image": str(tmp_path / "deep.npy")})
    assert float(item["image"].min()) == 0.0 and float(item["image"].max()) == 1.0
    assert "uint16 grey levels 0–12700 were rescaled to [0, 1]" in item["warnings"]


def test_cutout_datalists_leave_out_earlier_outputs(tmp_path):
    _write_cutouts(tmp_path / "in", np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "in" / "notes.txt").write_text("not a cutout")
    (tmp_path / "in" / "a_seg.npy").write_bytes(b"")
    (tmp_path / "in" / "a_summary.json").write_text('{"outputs": {"labels": "a_seg.npy"}}')
    datalist = cutout_datalist([str(tmp_path / "in")])
    assert [item["id"] for item in datalist] == ["a", "b", "c"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no cutout"):
        cutout_datalist([str(tmp_path / "empty")])
