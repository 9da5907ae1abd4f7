"""MTNeuro data through the real ``intern`` client: a loopback BossDB, the cache, the tasks' published samples."""

from __future__ import annotations

import itertools
import json
import logging
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

import neurobundles
from bossdb_emulator import ANNOTATED_CUBES, BossDBEmulator, SyntheticBrain, intern_environment, task2_cache
from neurobundles.data.mtneuro import (
    SPLITS,
    Cutout,
    CutoutCache,
    MTNeuroCacheError,
    MTNeuroDataset,
    MTNeuroTaskError,
    MTNeuroUnavailableError,
    available_tasks,
    fetch_cutout,
    load_task,
    prefetch,
    task_files,
    window_starts,
)

# The counts MTNeuro published (train, val, test), independent of the task files.
PUBLISHED = {
    "task2_2D_3class": (1076, 116, 200),
    "task2_2D_4class": (807, 87, 150),
    "task2_3D_3class": (136, 16, 28),
    "task2_3D_4class": (102, 12, 21),
}
REGIONS = {  # issue 16 / MTNeuro Table A1: x, y of each densely annotated cube
    "cortex": ((4600, 4856), (900, 1156)),
    "striatum": ((3700, 3956), (500, 756)),
    "vp": ((3063, 3319), (850, 1106)),
    "zi": ((1543, 1799), (650, 906)),
}
IMAGE = "bossdb://prasad/prasad2020/image"
LABELS = "bossdb://prasad/prasad_analysis/pixel_labels"


def tiny_task(**overrides) -> dict:
    """A small task on the real coordinates: two 32×32 corners of the cortex and VP cubes, a few slices."""
    spec = {
        "name": "tiny",
        "image": {"uri": IMAGE},
        "label": {"uri": LABELS},
        "resolution": 0,
        "regions": {"cortex": {"x": [4600, 4632], "y": [900, 932]}, "vp": {"x": [3063, 3095], "y": [850, 882]}},
        "z": {"train": [110, 130], "val": [130, 136], "test": [140, 150]},
        "tile_size": [32, 32],
        "spatial_dims": 2,
        "slices_per_sample": 1,
        "classes": ["background", "vessel", "cell", "axon"],
        "label_map": {"0": 0, "1": 1, "2": 2, "3": 3},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def boss(tmp_path):
    """A running emulator that ``intern`` talks to (INTERN_* variables, a HOME without ~/.intern)."""
    with BossDBEmulator() as emulator, intern_environment(emulator.host, emulator.token, tmp_path / "home"):
        yield emulator


@pytest.fixture(scope="session")
def task2(tmp_path_factory):
    """The Task 2 cutouts fetched through ``intern`` from an emulator that is stopped afterwards."""
    return task2_cache(tmp_path_factory.mktemp("mtneuro"))


@pytest.fixture
def dead_server(tmp_path):
    """``intern`` pointed at a port where nothing listens."""
    emulator = BossDBEmulator().start()
    host = emulator.host
    emulator.stop()
    with intern_environment(host, "token", tmp_path / "home"):
        yield host


# ---------------------------------------------------------------------------------------------------------------
# The emulator speaks intern's part of the Boss API
# ---------------------------------------------------------------------------------------------------------------
def test_intern_reads_the_prasad_channels_from_the_loopback_server(boss):
    from intern import array

    image = array(IMAGE)
    assert image.shape == (720, 1420, 5805)  # the real frame, z y x
    assert image.dtype == "uint8" and tuple(image.voxel_size) == (1.17, 1.17, 1.17)
    assert array(LABELS).dtype == "uint64" and array("bossdb://prasad/prasad_analysis/roi_labels").dtype == "uint64"
    cut = image[200:204, 900:964, 4600:4664]
    assert cut.shape == (4, 64, 64) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut, SyntheticBrain(0).render((200, 204), (900, 964), (4600, 4664))[0])
    assert "/v1/collection/prasad/experiment/prasad2020/channel/image" in boss.requests
    assert "/v1/coord/prasad_coord_frame" in boss.requests
    assert "/v1/cutout/prasad/prasad2020/image/0/4600:4664/900:964/200:204/" in boss.requests


def test_the_emulator_refuses_a_wrong_token(tmp_path):
    from intern import array
    from requests import HTTPError

    with (
        BossDBEmulator(token="right") as emulator,
        intern_environment(emulator.host, "wrong", tmp_path / "home"),
        pytest.raises(HTTPError, match="401"),
    ):
        array(IMAGE)


def test_pixel_labels_mark_bright_cells_dark_vessels_and_axon_lines(boss):
    from intern import array

    (x0, x1), (y0, y1) = REGIONS["striatum"]
    image = array(IMAGE)[200:208, y0:y1, x0:x1]
    labels = array(LABELS)[200:208, y0:y1, x0:x1]
    mean = {c: image[labels == c].mean() for c in range(4)}
    assert mean[2] - mean[0] > 40 and mean[0] - mean[3] > 20 and mean[3] - mean[1] > 20  # cell, bg, axon, vessel
    assert all((labels == c).mean() > 0.005 for c in range(4))

    def surviving(c: int) -> float:  # fraction of a class left after a 3×3 in-plane erosion
        mask = labels == c
        return binary_erosion(mask, structure=np.ones((1, 3, 3), bool)).sum() / mask.sum()

    assert surviving(3) < 0.1 < 0.4 < surviving(2)  # axons are thin lines, cells round bodies


def test_pixel_labels_exist_only_in_the_annotated_cubes(boss):
    from intern import array

    labels, image = array(LABELS), array(IMAGE)
    assert not labels[300:304, 300:364, 2500:2564].any()  # tissue, but no annotation here
    assert (image[300:304, 300:364, 2500:2564] < 60).any()
    (x0, x1), (y0, y1) = REGIONS["cortex"]
    assert not labels[600:604, y0:y1, x0:x1].any()  # above the annotated slices 110–469
    assert labels[465:470, y0:y1, x0:x1].any()


@pytest.mark.parametrize(
    ("cube_set", "corners"),
    [
        ("A", {0: (4600, 900), 1: (3700, 500), 2: (3063, 850), 3: (1543, 650)}),
        ("B", {0: (5312, 388), 1: (3828, 912), 2: (2551, 850), 3: (1287, 906)}),
        ("C", {0: (5056, 644), 1: (3344, 400), 2: (2151, 950), 3: (1031, 906)}),
        ("D", {0: (4600, 400), 1: (3800, 244), 2: (2295, 694), 3: (1799, 650)}),
    ],
)
def test_roi_labels_give_every_mtneuro_cube_its_region(boss, cube_set, corners):
    from intern import array

    to_class = {0: 0, 1: 0, 2: 1, 8: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3}  # MTNeuro's Task 1 mapping
    roi = array("bossdb://prasad/prasad_analysis/roi_labels")
    for region, (x, y) in corners.items():
        values = roi[200:202, y : y + 256, x : x + 256]
        assert to_class[int(np.bincount(values.ravel().astype(np.int64)).argmax())] == region, (cube_set, region)
    assert not roi[470:472, 900:910, 4600:4610].any()  # outside the annotated slices 109–459


def test_regions_differ_in_background_texture(boss):
    from intern import array

    image, labels = array(IMAGE), array(LABELS)
    levels = []
    for (x0, x1), (y0, y1) in REGIONS.values():
        background = image[250:252, y0:y1, x0:x1][labels[250:252, y0:y1, x0:x1] == 0]
        levels.append((background.mean(), background.std()))
    means = sorted(m for m, _ in levels)
    assert min(np.diff(means)) > 4
    assert max(s for _, s in levels) - min(s for _, s in levels) > 3


# ---------------------------------------------------------------------------------------------------------------
# Task definitions and the window rule
# ---------------------------------------------------------------------------------------------------------------
def test_the_four_published_task2_definitions_ship():
    assert set(PUBLISHED) <= set(available_tasks())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_task_definitions_hold_the_published_coordinates(name):
    task = load_task(name)
    regions = {r.name: (r.x, r.y) for r in task.regions}
    expected = dict(REGIONS) if "3class" in name else {k: v for k, v in REGIONS.items() if k != "zi"}
    assert regions == expected
    assert dict(task.z) == {"train": (110, 379), "val": (380, 409), "test": (420, 470)}
    assert (task.image_uri, task.label_uri, task.resolution) == (IMAGE, LABELS, 0)
    assert (task.spatial_dims, task.slices_per_sample) == ((2, 1) if "2D" in name else (3, 8))
    if "3class" in name:  # axons (3) join the background
        assert dict(task.label_map) == {0: 0, 1: 1, 2: 2, 3: 0} and task.classes[1:] == ("vessel", "cell")
    else:
        assert dict(task.label_map) == {0: 0, 1: 1, 2: 2, 3: 3} and task.classes[1:] == ("vessel", "cell", "axon")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_window_rule_gives_the_published_sample_counts(name):
    task = load_task(name)
    assert tuple(task.sample_count(split) for split in SPLITS) == PUBLISHED[name]
    assert tuple(task.published_samples[split] for split in SPLITS) == PUBLISHED[name]


@pytest.mark.parametrize(("split", "first", "last"), [("train", 110, 371), ("val", 380, 401), ("test", 420, 462)])
def test_3d_windows_stay_inside_their_split(split, first, last):
    lo, hi = load_task("task2_3D_3class").z[split]
    starts = window_starts(lo, hi, 8)
    assert len(starts) == math.ceil((hi - lo) / 8) and (starts[0], starts[-1]) == (first, last)
    assert all(lo <= s and s + 8 <= hi for s in starts)
    assert all(b - a == 8 for a, b in itertools.pairwise(starts[:-1]))  # disjoint but for the last
    assert set().union(*(range(s, s + 8) for s in starts)) == set(range(lo, hi))


def test_3d_samples_never_cross_regions():
    samples = load_task("task2_3D_3class").samples("train")
    per_region = {}
    for s in samples:
        per_region.setdefault(s.region, []).append(s.z)
    assert {r: len(z) for r, z in per_region.items()} == {"cortex": 34, "striatum": 34, "vp": 34, "zi": 34}
    assert all(max(z) + 8 == 379 for z in per_region.values())


def test_too_short_a_split_is_refused():
    with pytest.raises(ValueError, match="fewer than one 8-slice window"):
        window_starts(380, 385, 8)
    with pytest.raises(MTNeuroTaskError, match=r"z\.val has 5 slices, fewer than 8"):
        load_task(tiny_task(spatial_dims=3, slices_per_sample=8, z={"train": [110, 130], "val": [130, 135]}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": {"uri": "s3://bucket/x"}}, "not a BossDB channel URI"),
        ({"regions": {"cortex": {"x": [4600, 4630], "y": [900, 932]}}}, "not a multiple of the tile size 32"),
        ({"z": {"train": [130, 110]}}, r"z.train \[130, 110\) is empty"),
        ({"label_map": {"0": 0, "3": 7}}, "class indices 0..3"),
        ({"spatial_dims": 2, "slices_per_sample": 8}, "2D tasks take 1 slice"),
    ],
)
def test_malformed_task_definitions_name_the_file_and_the_field(tmp_path, change, message):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(tiny_task(**change)))
    with pytest.raises(MTNeuroTaskError, match=message) as error:
        load_task(path)
    assert str(path) in str(error.value)


def test_task_definitions_ship_with_the_bundles_that_train_on_them():
    homes = {name: path.parents[2].name for name, path in task_files().items() if name in PUBLISHED}
    assert homes == {
        "task2_2D_3class": "mtneuro_task2_unet2d",
        "task2_2D_4class": "mtneuro_task2_unet2d",
        "task2_3D_3class": "mtneuro_task2_unet3d",
        "task2_3D_4class": "mtneuro_task2_unet3d",
    }
    assert not list(Path(neurobundles.__file__).parent.rglob("task2_*.json")), "one source: no copy in the package"


def test_tasks_are_found_in_the_bundles_folder_and_defined_once(tmp_path, monkeypatch):
    for bundle, spec in (("a", tiny_task()), ("b", tiny_task()), ("c", tiny_task(name="tiny", tile_size=[16, 16]))):
        (tmp_path / bundle / "configs" / "tasks").mkdir(parents=True)
        (tmp_path / bundle / "configs" / "tasks" / "tiny.json").write_text(json.dumps(spec))
    monkeypatch.setenv("NEUROBUNDLES_BUNDLES", str(tmp_path))
    with pytest.raises(MTNeuroTaskError, match=r"two bundles define task 'tiny' differently: .*a/configs.*c/configs"):
        load_task("tiny")
    shutil.rmtree(tmp_path / "c")
    assert load_task("tiny").sample_count("train") == 2 * 20 and available_tasks() == ["tiny"]


def test_unknown_task_names_list_the_shipped_ones():
    with pytest.raises(MTNeuroTaskError, match="task2_2D_3class"):
        load_task("task9")


# ---------------------------------------------------------------------------------------------------------------
# Download, cache, offline
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_task2_is_fetched_through_intern_once_into_named_cache_files(task2):
    cache = Path(task2["cache"])
    cutouts = [p for p in task2["requests"] if p.startswith("/v1/cutout/")]
    # 4 regions × 2 channels; train (269 slices) in 3 requests of ≤ 8 Mi voxels, val and test in 1
    assert len(cutouts) == 4 * 2 * (3 + 1 + 1) == len(set(cutouts))
    name = "prasad/prasad2020/image_x4600-4856_y900-1156_z110-379_r0.npy"
    assert (cache / name).is_file()
    record = json.loads(
        (cache / "prasad/prasad_analysis/pixel_labels_x1543-1799_y650-906_z420-470_r0.json").read_text()
    )
    assert record["uri"] == LABELS and (record["x"], record["y"], record["z"]) == ([1543, 1799], [650, 906], [420, 470])
    assert (record["shape"], record["dtype"], record["source_dtype"]) == ([50, 256, 256], "uint8", "uint64")
    assert len(list(cache.rglob("*.npy"))) == 24 and len(list(cache.rglob("*.json"))) == 24


@pytest.mark.slow
def test_cached_cutouts_hold_exactly_what_the_server_sent(task2):
    (x0, x1), (y0, y1) = ANNOTATED_CUBES["vp"]
    image, classes = SyntheticBrain(0).render((380, 409), (y0, y1), (x0, x1))
    cache = CutoutCache(task2["cache"], offline=True)
    np.testing.assert_array_equal(cache.load(Cutout(IMAGE, (x0, x1), (y0, y1), (380, 409))), image)
    np.testing.assert_array_equal(cache.load(Cutout(LABELS, (x0, x1), (y0, y1), (380, 409))), classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_materialised_tasks_give_the_published_samples_and_shapes(task2, name):
    task = load_task(name)
    for split, count in zip(SPLITS, PUBLISHED[name]):
        dataset = MTNeuroDataset(name, split, task2["cache"], offline=True)
        assert len(dataset) == count
        for index in (0, count - 1):
            item = dataset[index]
            shape = (1, 256, 256) if task.spatial_dims == 2 else (1, 256, 256, 8)
            assert item["image"].shape == item["label"].shape == shape
            assert item["image"].dtype == np.float32 and item["label"].dtype == np.int64
            assert item["image"].min() >= 0 and item["image"].max() <= 1
            assert set(np.unique(item["label"])) <= set(range(task.num_classes))
    assert {s.region for s in task.samples("test")} == ({"cortex", "striatum", "vp", "zi"} if "3class" in name
                                                         else {"cortex", "striatum", "vp"})  # fmt: skip


@pytest.mark.slow
def test_a_3d_item_stacks_the_2d_items_of_its_slices(task2):
    volume = MTNeuroDataset("task2_3D_4class", "val", task2["cache"], offline=True)
    slices = MTNeuroDataset("task2_2D_4class", "val", task2["cache"], offline=True)
    by_position = {(s.region, s.z): i for i, s in enumerate(slices.data)}
    item = volume[len(volume) - 1]  # the last window of the last region: z 401–408, flush with the split's end
    assert (item["region"], item["z"]) == ("vp", 401)
    for k in range(8):
        flat = slices[by_position[("vp", 401 + k)]]
        np.testing.assert_array_equal(item["image"][..., k], flat["image"])
        np.testing.assert_array_equal(item["label"][..., k], flat["label"])


@pytest.mark.slow
def test_three_class_tasks_send_axons_to_background(task2):
    four = MTNeuroDataset("task2_2D_4class", "test", task2["cache"], offline=True)[60]
    three = MTNeuroDataset("task2_2D_3class", "test", task2["cache"], offline=True)[60]
    assert (four["label"] == 3).any()
    np.testing.assert_array_equal(three["label"], np.where(four["label"] == 3, 0, four["label"]))


@pytest.mark.slow
def test_a_warm_cache_needs_no_server(task2, dead_server):
    dataset = MTNeuroDataset("task2_3D_3class", "test", task2["cache"])  # online, but everything is cached
    assert len(dataset) == 28
    assert prefetch("task2_2D_4class", task2["cache"], retries=1)  # checks the files, downloads nothing


@pytest.mark.slow
def test_a_warm_cache_makes_no_cutout_requests(task2, boss):
    prefetch("task2_3D_4class", task2["cache"])
    assert boss.cutout_requests() == []


def test_datasets_pickle_without_their_arrays(boss, tmp_path):
    dataset = MTNeuroDataset(tiny_task(), "train", tmp_path / "cache", backoff=0.001)
    dataset[0]  # opens the memory maps
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 100_000
    np.testing.assert_array_equal(clone[5]["image"], dataset[5]["image"])


def test_a_damaged_cache_file_is_fetched_again_online(boss, tmp_path, caplog):
    cache = CutoutCache(tmp_path / "cache", backoff=0.001)
    _, image, _ = load_task(tiny_task()).cutouts("val")[0]
    good = np.array(cache.load(image))
    path = cache.path(image)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    before = len(boss.cutout_requests())
    with caplog.at_level(logging.WARNING, logger="neurobundles.mtneuro"):
        again = np.array(cache.load(image))
    assert len(boss.cutout_requests()) == before + 1
    np.testing.assert_array_equal(again, good)
    assert "SHA-256 differs" in caplog.text and "downloading it again" in caplog.text


def test_a_damaged_cache_file_is_refused_offline(boss, tmp_path):
    prefetch(tiny_task(), tmp_path / "cache", backoff=0.001)
    cache = CutoutCache(tmp_path / "cache", offline=True)
    _, _, labels = load_task(tiny_task()).cutouts("train")[1]
    path = cache.path(labels)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(MTNeuroCacheError, match="SHA-256 differs") as error:
        cache.load(labels)
    assert str(path) in str(error.value) and "fetch-mtneuro" in str(error.value)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda npy, side: npy.write_bytes(npy.read_bytes()[:200]), "cannot be read as .npy"),
        (lambda npy, side: side.unlink(), "record .* is missing"),
        (lambda npy, side: side.write_text("{"), "record .* is unreadable"),
        (lambda npy, side: npy.unlink(), "data file is missing"),
    ],
)
def test_cache_problems_are_named(boss, tmp_path, damage, problem):
    cache = CutoutCache(tmp_path / "cache", verify=False, backoff=0.001)
    _, image, _ = load_task(tiny_task()).cutouts("test")[0]
    cache.load(image)
    path = cache.path(image)
    damage(path, cache.sidecar(path))
    assert cache.problem(image) is not None
    with pytest.raises(MTNeuroCacheError, match=problem):
        CutoutCache(tmp_path / "cache", offline=True, verify=False).load(image)


def test_offline_without_a_cache_says_how_to_prefetch(tmp_path):
    with pytest.raises(MTNeuroUnavailableError, match="offline") as error:
        MTNeuroDataset("task2_2D_3class", "val", tmp_path / "empty", offline=True)
    assert "neurobundles fetch-mtneuro --task" in str(error.value) and "prefetch(" in str(error.value)


def test_an_unreachable_server_fails_after_retries_with_the_way_out(dead_server):
    cutout = Cutout(IMAGE, (4600, 4632), (900, 932), (110, 112))
    with pytest.raises(MTNeuroUnavailableError, match=r"failed 3 time\(s\)") as error:
        fetch_cutout(cutout, retries=3, backoff=0.001)
    assert f"http://{dead_server}" in str(error.value) and "fetch-mtneuro" in str(error.value)


def test_transient_failures_and_broken_payloads_are_retried(boss):
    cutout = Cutout(LABELS, (3700, 3764), (500, 564), (200, 210))
    boss.fail_next(3, status=503)
    boss.truncate_next(1)
    data = fetch_cutout(cutout, retries=6, backoff=0.001)
    np.testing.assert_array_equal(data, SyntheticBrain(0).render((200, 210), (500, 564), (3700, 3764))[1])
    assert data.dtype == np.uint64
    assert len(boss.cutout_requests()) == 2  # the broken payload and its retry


def test_a_refused_token_is_not_retried(tmp_path):
    with BossDBEmulator(token="right") as emulator, intern_environment(emulator.host, "wrong", tmp_path / "home"):
        with pytest.raises(MTNeuroUnavailableError, match=r"HTTP 401.*token"):
            fetch_cutout(Cutout(IMAGE, (0, 8), (0, 8), (0, 1)), retries=5, backoff=60)
        assert len(emulator.requests) == 2  # intern asks for the channel twice; no retry


def test_cutouts_outside_the_coordinate_frame_are_refused(boss):
    with pytest.raises(MTNeuroUnavailableError, match=r"x 5800:5900 lies outside .* \(0:5805\)"):
        fetch_cutout(Cutout(IMAGE, (5800, 5900), (0, 8), (0, 1)), retries=1)
    assert boss.cutout_requests() == []


def test_big_cutouts_go_in_slabs(boss):
    cutout = Cutout(IMAGE, (4600, 4632), (900, 932), (110, 140))
    data = fetch_cutout(cutout, max_request_voxels=32 * 32 * 8)
    assert [p.rsplit("/", 2)[-2] for p in boss.cutout_requests()] == ["110:118", "118:126", "126:134", "134:140"]
    np.testing.assert_array_equal(data, SyntheticBrain(0).render((110, 140), (900, 932), (4600, 4632))[0])
