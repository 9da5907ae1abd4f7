"""MTNeuro Task 1 pieces: region labels, ROI settings, the ResNet classifier, mixup, BYOL and the linear probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.engines import SupervisedTrainer

from neurobundles.mtneuro.regions import (
    DEFAULT_TASK1_CONFIG,
    REGIONS,
    Task1Config,
    TileRegion,
    TileRegiond,
    load_task1_config,
    quadrants,
    roi_mode,
    tile_region,
    tile_regions,
)
from neurobundles.networks.byol import (
    BYOL,
    XRAY_MEAN,
    XRAY_STD,
    BYOLIteration,
    TwoViewsd,
    byol_augmentation,
    byol_train_step,
    cosine_momentum,
    embed_images,
    probe_accuracy,
    train_linear_probe,
)
from neurobundles.networks.resnet2d import MixupPrepareBatch, ResNetClassifier, mixup

CTX, STR, VP, ZI = range(4)
NARROW = {"channels": (8, 16, 32, 64), "layers": (1, 1, 1, 1)}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tiny convolutions gain nothing from a second thread, and on a loaded 2-core machine two OpenMP
    threads made the training tests 30× slower (spin-waiting); one thread keeps them at seconds everywhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def textured_tiles(per_class: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic [0, 1] tiles whose four 'regions' differ in texture, like the X-ray regions differ in structure:
    sparse large cells (CTX), dense small cells (STR), fibres running one way (VP) or diagonally (ZI)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images, labels = [], []
    for region in range(4):
        for _ in range(per_class):
            image = np.full((size, size), 0.5, np.float32)
            if region in (CTX, STR):
                count, sigma = (3, 3.0) if region == CTX else (25, 0.8)
                for y, x in rng.integers(0, size, (count, 2)):
                    image += 0.4 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
            else:
                angle = rng.normal(0.0 if region == VP else np.pi / 4, 0.1)
                wave = np.sin(angle) * xx + np.cos(angle) * yy
                image += 0.3 * np.sin(2 * np.pi / 6 * wave + rng.uniform(0, 2 * np.pi))
            image += rng.normal(0, 0.08, image.shape).astype(np.float32)
            images.append(np.clip(image, 0, 1))
            labels.append(region)
    return torch.from_numpy(np.stack(images)[:, None]), torch.tensor(labels)


# --- region labels -------------------------------------------------------------------------------------------------


def tile_of(parts: list[tuple[int, int]], side: int = 16) -> np.ndarray:
    """A uint64 tile filled row-major with ``count`` voxels of each ``label``, as the roi_labels channel stores."""
    values = np.concatenate([np.full(count, label, dtype=np.uint64) for label, count in parts])
    assert values.size == side * side
    return values.reshape(side, side)


def test_region_is_the_mapped_mode_of_the_tile():
    assert tile_region(tile_of([(8, 256)])) == STR
    assert tile_region(tile_of([(6, 154), (0, 102)])) == ZI
    # the mode of the raw labels decides, not the region with most voxels: VP owns 3 and 4 (140 voxels together)
    assert tile_region(tile_of([(1, 116), (3, 70), (4, 70)])) == CTX
    assert tile_region(tile_of([(4, 200), (7, 56)])) == VP


def test_ties_go_to_the_smallest_raw_label():
    tie = tile_of([(3, 128), (2, 128)])
    assert roi_mode(tie) == 2 and tile_region(tie) == STR
    assert roi_mode(torch.as_tensor(tile_of([(8, 128), (5, 128)]).astype(np.int64))) == 5


def test_unmapped_mode_is_an_actionable_error():
    with pytest.raises(ValueError, match="roi_label_groups"):
        tile_region(tile_of([(9, 200), (0, 56)]))


def test_stack_and_dictionary_transform_give_region_indices():
    stack = np.stack([tile_of([(0, 256)]), tile_of([(2, 256)]), tile_of([(3, 256)]), tile_of([(5, 256)])])
    assert tile_regions(stack).tolist() == [CTX, STR, VP, ZI]
    label = TileRegion()(stack[3][None])
    assert label.dtype == torch.long and label.ndim == 0 and int(label) == ZI
    out = TileRegiond(["label", "other"], allow_missing_keys=True)({"label": stack[1][None], "image": 1})
    assert int(out["label"]) == STR and out["image"] == 1


def test_quadrants_are_the_reference_corners_in_order():
    image = np.arange(16).reshape(4, 4)
    corners = quadrants(image)
    assert [c.tolist() for c in corners] == [
        [[0, 1], [4, 5]],
        [[2, 3], [6, 7]],
        [[8, 9], [12, 13]],
        [[10, 11], [14, 15]],
    ]


# --- ROI settings --------------------------------------------------------------------------------------------------

PAPER_CUBES = {  # x then y ranges, typed from the paper's Tables A1 and A2
    ("A", "CTX"): ((4600, 4856), (900, 1156)),
    ("A", "ZI"): ((1543, 1799), (650, 906)),
    ("B", "CTX"): ((5312, 5568), (388, 644)),
    ("B", "STR"): ((3828, 4084), (912, 1168)),
    ("C", "VP"): ((2151, 2407), (950, 1206)),
    ("C", "ZI"): ((1031, 1287), (906, 1162)),
    ("D", "STR"): ((3800, 4056), (244, 500)),
    ("D", "ZI"): ((1799, 2055), (650, 906)),
}


def cubes(config: Task1Config, setting: str, split: str) -> list[tuple[str, str, tuple[int, int]]]:
    return [(b.cube_set, b.region, b.z) for b in config.boxes(setting, split)]


def test_roi_settings_select_the_right_cubes():
    config = load_task1_config()
    a_train = [("A", r, (110, 379)) for r in REGIONS]
    assert cubes(config, "ROI-C1", "train") == a_train
    assert cubes(config, "ROI-C1", "val") == [("A", r, (380, 409)) for r in REGIONS]
    assert cubes(config, "ROI-C1", "test") == [("A", r, (420, 470)) for r in REGIONS]
    other = [(s, r, (110, 470)) for s in "BC" for r in REGIONS]
    assert cubes(config, "ROI-C2", "train") == a_train
    assert cubes(config, "ROI-C2", "test") == other
    assert cubes(config, "ROI-C3", "train") == a_train + [("D", r, (110, 470)) for r in REGIONS]
    assert cubes(config, "ROI-C3", "test") == other
    boxes = {(b.cube_set, b.region): (b.x, b.y) for s in config.settings for b in config.boxes(s, "test")}
    boxes.update({(b.cube_set, b.region): (b.x, b.y) for b in config.boxes("ROI-C3", "train")})
    for key, expected in PAPER_CUBES.items():
        assert boxes[key] == expected, key


def test_tile_counts_per_setting_and_split():
    config = load_task1_config()
    counts = {(s, sp): len(config.tiles(s, sp)) for s in config.settings for sp in ("train", "val", "test")}
    assert [counts["ROI-C1", sp] for sp in ("train", "val", "test")] == [1076, 116, 200]
    assert counts["ROI-C2", "test"] == 2880  # the paper's 2,880 test images: 2 cube sets × 4 regions × 360 slices
    assert counts["ROI-C3", "train"] == 1076 + 1440 and counts["ROI-C3", "test"] == 2880
    assert config.tile_size == (256, 256) and config.downsample == 2 and config.eval_quadrants


def test_tiles_are_cut_from_their_box():
    config = Task1Config({**json.loads(DEFAULT_TASK1_CONFIG.read_text()), "tile_size": [128, 128]})
    box = config.boxes("ROI-C1", "test")[1]
    assert box.index == (slice(420, 470), slice(500, 756), slice(3700, 3956))
    tiles = box.tiles(config.tile_size)
    assert len(tiles) == 50 * 4 and (tiles[5].z, tiles[5].y, tiles[5].x) == (1, 0, 128)
    assert tiles[5].origin == (421, 500, 3828)
    cutout = np.arange(np.prod(box.shape), dtype=np.int64).reshape(box.shape)
    np.testing.assert_array_equal(tiles[5].cut(cutout), cutout[1, :128, 128:])
    with pytest.raises(ValueError, match="box"):
        tiles[5].cut(cutout[:, :100])


def test_config_errors_say_what_to_fix(tmp_path):
    raw = json.loads(DEFAULT_TASK1_CONFIG.read_text())
    with pytest.raises(ValueError, match="no setting"):
        Task1Config(raw).boxes("ROI-C4", "test")
    broken = json.loads(json.dumps(raw))
    broken["settings"]["ROI-C2"]["test"] = [["E", "all"]]
    with pytest.raises(ValueError, match="cube set 'E'"):
        Task1Config(broken, "bad.json")
    broken = json.loads(json.dumps(raw))
    broken["cube_sets"]["B"]["VP"]["x"] = [2551, 2700]
    with pytest.raises(ValueError, match="whole number of 256×256 tiles"):
        Task1Config(broken)
    with pytest.raises(FileNotFoundError, match="task config"):
        load_task1_config(tmp_path / "missing.json")


# --- networks ------------------------------------------------------------------------------------------------------


def test_resnet18_classifier_embeds_and_classifies():
    net = ResNetClassifier()  # the reference X-ray ResNet-18: 3×3 stride-1 stem, no max-pool
    assert net.embedding_dim == 512 and net.dropout.p == 0.2
    # torchvision resnet18 without fc (11,176,512), its 3-channel 7×7 stem (9,408) replaced by a 1-channel 3×3 (576)
    assert sum(p.numel() for p in net.encoder.parameters()) == 11_176_512 - 9_408 + 576
    net.eval()
    x = torch.rand(2, 1, 32, 32)
    assert net.embed(x).shape == (2, 512) and net(x).shape == (2, 4)


def test_mixup_mixes_images_and_labels_with_the_same_weight_and_partner():
    batch, classes = 12, 4
    images = torch.eye(batch).reshape(batch, 1, 1, batch)  # image i is the indicator of i: mixing is readable
    labels = torch.arange(batch) % classes
    mixed, targets = mixup(images, labels, classes, prob=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(targets.sum(1), torch.ones(batch))
    for i in range(batch):
        weights = mixed[i].flatten()
        partners = [j for j in range(batch) if j != i and weights[j] > 0]
        if not partners:  # mixed with itself, or λ = 0
            assert torch.allclose(targets[i], torch.nn.functional.one_hot(labels[i], classes).float())
            continue
        (j,) = partners
        lam = weights[j]
        assert 0 < lam <= 0.5 and torch.isclose(weights[i], 1 - lam)
        expected = (1 - lam) * torch.nn.functional.one_hot(labels[i], classes) + lam * torch.nn.functional.one_hot(
            labels[j], classes
        )
        assert torch.allclose(targets[i], expected.float())
    again, _ = mixup(images, labels, classes, prob=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mixed, again)
    untouched, hard = mixup(images, labels, classes, prob=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(untouched, images) and torch.equal(hard.argmax(1), labels)


def test_supervised_resnet_separates_textured_regions():
    torch.manual_seed(0)
    train_x, train_y = textured_tiles(48, seed=0)
    test_x, test_y = textured_tiles(24, seed=1)
    loader = torch.utils.data.DataLoader(
        [{"image": x, "label": y} for x, y in zip(train_x, train_y)],
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    net = ResNetClassifier(**NARROW)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=14,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4),
        loss_function=torch.nn.CrossEntropyLoss(),
    )
    trainer.run()
    net.eval()
    with torch.no_grad():
        accuracy = (net(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy >= 0.9


def test_mixup_batches_train_through_the_monai_trainer():
    torch.manual_seed(0)
    x, y = textured_tiles(4, seed=2)
    net = ResNetClassifier(**NARROW)
    seen = []
    loss = torch.nn.CrossEntropyLoss()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": x, "label": y[:, None]}],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=lambda pred, target: seen.append(target) or loss(pred, target),
        prepare_batch=MixupPrepareBatch(num_classes=4, prob=1.0, seed=0),
    )
    trainer.run()
    assert seen[0].shape == (16, 4) and torch.allclose(seen[0].sum(1), torch.ones(16))
    assert (seen[0].max(1).values < 1).any()  # soft targets reached the loss


# --- BYOL and the linear probe --------------------------------------------------------------------------------------


def two_view_batch(views: TwoViewsd, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [views({"image": image}) for image in images]
    return tuple(torch.stack([torch.as_tensor(p[k]) for p in pairs]) for k in ("view1", "view2"))


def test_two_views_differ_and_are_reproducible():
    image = torch.rand(1, 32, 32)
    views = TwoViewsd("image", byol_augmentation((16, 16)))
    first = views({"image": image})
    assert first["view1"].shape == (1, 16, 16) and not torch.equal(first["view1"], first["view2"])
    again = TwoViewsd("image", byol_augmentation((16, 16)))({"image": image})
    assert torch.equal(first["view1"], again["view1"]) and torch.equal(first["view2"], again["view2"])
    jittered = byol_augmentation(
        (16, 16), resized_crop_scale=0.5, flips=True, rotate90=True, intensity=0.1, blur_prob=1
    )
    assert jittered(image).shape == (1, 16, 16)


def test_byol_loss_decreases_and_linear_probe_trains():
    torch.manual_seed(0)
    train_x, train_y = textured_tiles(48, seed=0)
    test_x, test_y = textured_tiles(24, seed=1)
    model = BYOL(ResNetClassifier(**NARROW).encoder, 64, projection_dim=32, hidden_dim=128)
    target_before = next(model.target_encoder.parameters()).clone()
    views = TwoViewsd("image", byol_augmentation((16, 16)))
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    losses, total = [], 16
    for step in range(total):
        if step % 4 == 0:
            order = torch.randperm(len(train_x), generator=generator)
        batch = train_x[order[(step % 4) * 48 : (step % 4 + 1) * 48]]
        losses.append(byol_train_step(model, optimizer, *two_view_batch(views, batch), cosine_momentum(step, total)))
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:2])
    assert not torch.equal(next(model.target_encoder.parameters()), target_before)  # the EMA moved the target

    train_e = embed_images(model, (train_x - XRAY_MEAN) / XRAY_STD)
    test_e = embed_images(model, (test_x - XRAY_MEAN) / XRAY_STD)
    probe, history = train_linear_probe(train_e, train_y, 4, epochs=40, lr=0.03, batch_size=32, generator=generator)
    accuracy, confusion = probe_accuracy(probe, test_e, test_y, 4)
    assert history[-1] < 0.5 * history[0]
    assert accuracy >= 0.6 and confusion.sum() == len(test_y) and np.trace(confusion) == round(accuracy * len(test_y))


def test_byol_iteration_runs_in_the_monai_trainer():
    x, _ = textured_tiles(4, seed=3)
    views = TwoViewsd("image", byol_augmentation((16, 16)))
    v1, v2 = two_view_batch(views, x)
    model = BYOL(ResNetClassifier(**NARROW).encoder, 64, projection_dim=16, hidden_dim=32)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"view1": v1, "view2": v2}] * 2,
        network=model,
        optimizer=torch.optim.SGD(model.trainable_parameters(), lr=0.01),
        loss_function=torch.nn.Identity(),
        iteration_update=BYOLIteration(),
    )
    trainer.run()
    assert trainer.state.iteration == 2 and 0 < float(trainer.state.output["loss"]) < 4
    assert trainer.state.output["momentum"] == pytest.approx(cosine_momentum(1, 2))
