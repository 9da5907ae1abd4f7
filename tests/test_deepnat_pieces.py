"""DeepNAT's pieces: network, dense inference, coordinates, patch sampling, votes, CRF, MICCAI 2012 data.

Real-data tests read FreeSurfer's fsaverage / fsaverage_xhemi through the ``fsaverage`` fixture and a
MICCAI 2012 fixture built from them (``tests/layouts_miccai2012.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from layouts_miccai2012 import make_miccai2012, subject_volumes
from neurobundles.data.miccai2012 import (
    CLASS_NAMES,
    OUTPUT_IDS,
    TESTING_IDS,
    TRAINING_IDS,
    FreeSurferStructures,
    brain_mask_from_labels,
    label_table,
    miccai2012_datalist,
    structure_map,
)
from neurobundles.inferers.deepnat import DenseCRF, HeadVotes
from neurobundles.networks.deepnat import DeepNAT, DeepNATCascade, dense_logits, patch_logits
from neurobundles.transforms.coordinates import cartesian_coordinates, coordinate_maps, spectral_coordinates
from neurobundles.transforms.labels import MapLabels
from neurobundles.transforms.patch_sampling import RandDeepNATPatchesd, default_class_weights

DOWNSAMPLE = 3
"""Voxel size of the MICCAI 2012 fixture in mm (the bundle's learning test trains on the same fixture)."""


def _volume(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    shape = [n // factor for n in volume.shape]
    cut = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor].astype(np.float32)
    return cut.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean((1, 3, 5))


def _dice(a: np.ndarray, b: np.ndarray, classes: range) -> list[float]:
    return [2 * np.sum((a == c) & (b == c)) / max(np.sum(a == c) + np.sum(b == c), 1) for c in classes]


def _randomise_norms(network: torch.nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from the identity, so dense inference must fold them."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm3d)):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)


# --- network --------------------------------------------------------------------------------------------------


def test_network_outputs_seven_heads_of_class_logits() -> None:
    net = DeepNAT(out_channels=26).eval()
    logits = net(torch.rand(2, 1, 23, 23, 23), torch.rand(2, 6))
    assert logits.shape == (2, 26, 7)
    assert torch.nn.CrossEntropyLoss()(logits, torch.zeros(2, 7, dtype=torch.long)).ndim == 0


def test_parameter_count_matches_released_network() -> None:
    """Caffe's rounded-up pooling gives a 3³ block: 2 767 584 weights (2.77 M) for 26 classes."""
    net = DeepNAT(out_channels=26)
    weights = sum(p.numel() for name, p in net.named_parameters() if name.endswith("weight") and p.ndim > 1)
    assert weights == 2_767_584
    assert sum(p.numel() for p in net.parameters()) == 2_770_742
    assert net.block_size == 3
    floor = DeepNAT(out_channels=26, ceil_mode=False)
    assert floor.block_size == 2 and sum(p.numel() for p in floor.parameters()) == 1_525_558


def test_cascade_checks_the_first_stage_is_binary() -> None:
    with pytest.raises(ValueError, match="out_channels must be 2"):
        DeepNATCascade(DeepNAT(out_channels=3), DeepNAT(out_channels=26))


# --- dense inference ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsaverage_coarse(fsaverage: Path) -> dict[str, torch.Tensor]:
    """fsaverage at 6 mm (42³): normalised T1, brain mask (brainmask.mgz) and the six coordinate maps."""
    t1 = _block_mean(_volume(fsaverage / "mri" / "orig.mgz"), 6)
    mask = _block_mean(_volume(fsaverage / "mri" / "brainmask.mgz") > 0, 6) >= 0.5
    affine = nib.load(str(fsaverage / "mri" / "orig.mgz")).affine @ np.diag([6.0, 6.0, 6.0, 1.0])
    coords, _ = coordinate_maps(mask, affine)
    image = t1 / np.percentile(t1[mask], 99)
    return {
        "image": torch.from_numpy(image[None].astype(np.float32)),
        "coords": torch.from_numpy(coords),
        "mask": torch.from_numpy(mask),
    }


@pytest.mark.slow
def test_dense_equals_per_patch_with_random_weights(fsaverage_coarse: dict[str, torch.Tensor]) -> None:
    """The released architecture, random weights: dense over every brain voxel, per patch on 400 of them."""
    torch.manual_seed(0)
    net = DeepNAT(out_channels=26).eval()
    _randomise_norms(net)
    centres = torch.nonzero(fsaverage_coarse["mask"])
    dense = dense_logits(net, fsaverage_coarse["image"], fsaverage_coarse["coords"], centres)
    subset = torch.randperm(len(centres), generator=torch.Generator().manual_seed(1))[:400]
    reference = patch_logits(net, fsaverage_coarse["image"], fsaverage_coarse["coords"], centres[subset])
    agree = (dense[subset].max(1).indices == reference.max(1).indices).float().mean()
    assert agree >= 0.999
    probabilities = torch.softmax(dense[subset], 1) - torch.softmax(reference, 1)
    assert probabilities.abs().max() < 1e-4


# --- coordinates ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brain_masks(fsaverage: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name in ("fsaverage", "fsaverage_xhemi"):
        image = nib.load(str(fsaverage.parent / name / "mri" / "brainmask.mgz"))
        out[name] = (np.asarray(image.dataobj) > 0, image.affine)
    return out


def test_cartesian_coordinates_are_world_offsets_from_the_centre_of_mass() -> None:
    mask = np.zeros((9, 9, 9), bool)
    mask[2:5, 3:6, 4:7] = True  # centre of mass at voxel (3, 4, 5)
    lia = np.array([[-2.0, 0, 0, 0], [0, 0, 2.0, 0], [0, -2.0, 0, 0], [0, 0, 0, 1]])
    coords = cartesian_coordinates(mask, lia, scale=1.0)
    assert np.allclose(coords[:, 3, 4, 5], 0)
    assert np.allclose(coords[:, 4, 4, 5], [-2, 0, 0])  # +i is left: x decreases
    assert np.allclose(coords[:, 3, 4, 6], [0, 2, 0])  # +k is anterior


@pytest.mark.slow
def test_spectral_coordinates_are_laplacian_eigenvectors(brain_masks: dict) -> None:
    """Solved on a 4 mm grid through a two-level cascade; small residual there, and on the full-resolution graph
    the interpolated maps have the Rayleigh quotients the eigenvalues predict (λ / H² in mm⁻², times 1 mm²)."""
    mask, affine = brain_masks["fsaverage"]
    began = time.perf_counter()
    maps, info = spectral_coordinates(mask, affine, max_voxels=40_000, coarsest=5_000)
    seconds = time.perf_counter() - began
    print(f"spectral coordinates of a {mask.sum()}-voxel mask: {seconds:.1f} s, levels {info['levels']}")
    assert info["factor"] == 4 and len(info["levels"]) == 2 and info["levels"][0]["iterations"] > 0
    assert max(info["relative_residuals"]) < 2e-3
    points = np.argwhere(mask)
    box = tuple(slice(a, b + 1) for a, b in zip(points.min(0), points.max(0)))
    values, mask = maps[(slice(None), *box)], mask[box]
    energy = np.zeros(3)  # vᵀLv = Σ over linked neighbours (v_i − v_j)², on the full-resolution graph
    for axis in range(3):
        n = mask.shape[axis]
        linked = mask.take(range(n - 1), axis) & mask.take(range(1, n), axis)
        difference = values.take(range(1, n), axis + 1) - values.take(range(n - 1), axis + 1)
        energy += (difference[:, linked].astype(np.float64) ** 2).sum(1)
    inside = values[:, mask].astype(np.float64)
    rayleigh = energy / (inside**2).sum(1)
    assert np.allclose(rayleigh, info["eigenvalues_mm"], rtol=0.25), (rayleigh, info["eigenvalues_mm"])
    assert np.abs(np.corrcoef(inside) - np.eye(3)).max() < 0.1
    assert np.allclose(inside.mean(1), 0, atol=1e-4) and np.allclose((inside**2).mean(1), 1, atol=1e-3)
    assert not values[:, ~mask].any()
    assert min(info["correlations"]) > 0.5  # each map follows its world axis


@pytest.mark.slow
def test_spectral_coordinates_agree_between_a_brain_and_its_mirror_image(brain_masks: dict) -> None:
    """fsaverage_xhemi is fsaverage mirrored left–right: after mirroring back its left–right map is the negative
    (the axes keep pointing right), the other two are the same."""
    maps = {
        name: spectral_coordinates(mask, affine, max_voxels=20_000)[0] for name, (mask, affine) in brain_masks.items()
    }
    mask = brain_masks["fsaverage"][0]
    mirrored = maps["fsaverage_xhemi"][:, ::-1]
    both = mask & brain_masks["fsaverage_xhemi"][0][::-1]
    correlation = [np.corrcoef(maps["fsaverage"][i][both], mirrored[i][both])[0, 1] for i in range(3)]
    assert correlation[0] < -0.99 and correlation[1] > 0.99 and correlation[2] > 0.99


# --- votes and CRF --------------------------------------------------------------------------------------------


def _one_hot_logits(classes: list[int], num_classes: int = 3) -> torch.Tensor:
    """Logits ``1×K×7`` whose head h predicts ``classes[h]`` with probability ≈ 0.9."""
    logits = torch.zeros(1, num_classes, 7)
    for head, cls in enumerate(classes):
        logits[0, cls, head] = 3.0
    return logits


def test_vote_weighs_the_centre_twice() -> None:
    region = torch.zeros(3, 3, 3, dtype=torch.bool)
    region[1, 1, 1] = True
    votes = HeadVotes(region, num_classes=3)
    centre = torch.tensor([[1, 1, 1]])
    votes.add(centre, _one_hot_logits([1, 0, 0, 0, 0, 0, 0]))  # its own patch: centre head says 1 (weight 2)
    # the six neighbours' patches: the head pointing back at (1,1,1) is the opposite offset
    opposite = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5}
    offsets = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
    says = [2, 2, 2, 1, 0, 0]  # hand count: class 1: 2 (centre) + 1 = 3; class 2: 3; class 0: 2 → tie 1 vs 2
    for head, (offset, cls) in enumerate(zip(offsets, says), 1):
        classes = [0] * 7
        classes[opposite[head]] = cls
        logits = _one_hot_logits(classes)
        logits[0, cls, opposite[head]] = 3.0 if cls != 2 else 2.0  # class 2's votes are less confident
        votes.add(centre + torch.tensor(offset), logits)
    assert votes.hard[0].tolist() == [2.0, 3.0, 3.0]
    assert votes.labels().tolist() == [1]  # tie 3:3 broken by the larger soft vote
    soft = votes.probabilities()[0]
    assert torch.isclose(soft.sum(), torch.tensor(1.0)) and soft.argmax() == 1


def test_vote_lets_three_neighbours_overrule_the_centre() -> None:
    region = torch.ones(3, 3, 3, dtype=torch.bool)
    votes = HeadVotes(region, num_classes=3)
    votes.add(torch.tensor([[1, 1, 1]]), _one_hot_logits([1, 0, 0, 0, 0, 0, 0]))  # centre: class 1, weight 2
    for offset, head in (((1, 0, 0), 1), ((0, 1, 0), 3), ((0, 0, 1), 5)):  # three neighbours point back: class 2
        classes = [0] * 7
        classes[head] = 2
        votes.add(torch.tensor([offset]) + 1, _one_hot_logits(classes))
    row = int(votes.index[1, 1, 1])
    assert votes.hard[row].tolist() == [0.0, 2.0, 3.0]
    assert int(votes.labels()[row]) == 2


@pytest.fixture(scope="module")
def ventricle_crop(fsaverage: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A 40³ block of fsaverage around the left lateral ventricle: T1 and labels 0 (other), 1 (lateral
    ventricle), 2 (cerebral white matter) from aseg — a real border with real contrast."""
    t1 = _volume(fsaverage / "mri" / "T1.mgz").astype(np.float32)
    aseg = np.rint(_volume(fsaverage / "mri" / "aseg.mgz")).astype(int)
    centre = np.argwhere(aseg == 4).mean(0).astype(int)
    box = tuple(slice(int(c) - 20, int(c) + 20) for c in centre)
    labels = np.where(np.isin(aseg, (4, 43)), 1, np.where(np.isin(aseg, (2, 41)), 2, 0))[box]
    return torch.from_numpy(t1[box] / 110.0), torch.from_numpy(labels)


def test_crf_removes_isolated_noise_and_keeps_the_boundary(ventricle_crop: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A confident prediction (0.8 for its label) with 2 % of voxels flipped to a wrong label."""
    image, truth = ventricle_crop
    generator = torch.Generator().manual_seed(0)
    noisy = truth.clone()
    flips = torch.rand(truth.shape, generator=generator) < 0.02
    noisy[flips] = (truth[flips] + 1 + torch.randint(0, 2, truth.shape, generator=generator)[flips]) % 3
    probabilities = torch.full((3, *truth.shape), 0.1)
    probabilities.scatter_(0, noisy[None].long(), 0.8)
    began = time.perf_counter()
    result = DenseCRF().labels(probabilities, image)
    print(f"CRF on {tuple(truth.shape)} × 3 labels: {time.perf_counter() - began:.2f} s")
    neighbours = [torch.roll(truth, (a, b, c), (0, 1, 2)) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    interior = torch.stack([n == truth for n in neighbours]).all(0)
    isolated = flips & interior
    ventricle = truth == 1
    border = (ventricle & ~torch.stack([n == 1 for n in neighbours]).all(0)) | (
        ~ventricle & torch.stack([n == 1 for n in neighbours]).any(0)
    )
    assert isolated.sum() > 500 and border.sum() > 2000
    assert (result[isolated] == truth[isolated]).float().mean() > 0.99
    assert (result[border & ~flips] == truth[border & ~flips]).float().mean() > 0.95
    assert (result == truth).float().mean() > (noisy == truth).float().mean()


# --- MICCAI 2012 data and labels ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def miccai(tmp_path_factory: pytest.TempPathFactory, fsaverage: Path) -> Path:
    root = tmp_path_factory.mktemp("miccai2012")
    return make_miccai2012(
        root, fsaverage.parent, training=1, testing=1, subjects=("fsaverage",), downsample=DOWNSAMPLE
    )


def test_fixture_has_the_release_layout(miccai: Path) -> None:
    assert (miccai / "training-images" / "1000_3.nii.gz").is_file()
    assert (miccai / "training-labels" / "1000_3_glm.nii.gz").is_file()
    items = miccai2012_datalist(miccai, "all")
    assert [item["id"] for item in items] == ["1000", "1003"]
    assert miccai2012_datalist(miccai, "testing")[0]["label"].endswith("testing-labels/1003_3_glm.nii.gz")
    with pytest.raises(FileNotFoundError, match="1001"):
        miccai2012_datalist(miccai, "training", ids=["1000", "1001"])
    assert len(TRAINING_IDS) == 15 and len(TESTING_IDS) == 20 and not set(TRAINING_IDS) & set(TESTING_IDS)


def test_structure_map_takes_cortical_parcels_by_hemisphere_and_ignores_42_43() -> None:
    mapping = structure_map()
    assert 42 not in mapping and 43 not in mapping
    assert mapping[100] == mapping[206] == CLASS_NAMES.index("Right-Cerebral-Gray-Matter")
    assert mapping[101] == mapping[207] == CLASS_NAMES.index("Left-Cerebral-Gray-Matter")
    assert mapping[45] == CLASS_NAMES.index("Left-Cerebral-White-Matter") and mapping[35] == 25
    assert {mapping[v] for v in OUTPUT_IDS[1:]} == set(range(1, 26))  # our own output reads back unchanged
    assert len(CLASS_NAMES) == 26


def test_fixture_labels_ignore_42_43(miccai: Path) -> None:
    labels = _volume(miccai / "training-labels" / "1000_3_glm.nii.gz")
    assert labels.dtype == np.int16 and (labels == 42).sum() == 50 and (labels == 43).sum() == 50
    classes = MapLabels(structure_map())(labels)
    assert not classes[np.isin(labels, (42, 43))].any()
    assert set(np.unique(classes).tolist()) == set(range(26))


def test_neuromorphometrics_and_freesurfer_routes_give_the_same_structures(fsaverage: Path) -> None:
    """aparc+aseg → Neuromorphometrics ids → 25 structures equals aparc+aseg → 25 structures, voxel for voxel."""
    _, labels, _ = subject_volumes(fsaverage)
    aparc = _volume(fsaverage / "mri" / "aparc+aseg.mgz")
    via_neuromorphometrics = MapLabels(structure_map())(labels)
    assert np.array_equal(via_neuromorphometrics, FreeSurferStructures()(aparc))
    corpus_callosum = np.isin(aparc, (251, 252, 253, 254, 255))
    assert set(np.unique(via_neuromorphometrics[corpus_callosum]).tolist()) == {1, 2}  # white matter, both sides


def test_label_table_lists_every_output_id() -> None:
    rows = [line.split() for line in label_table().splitlines() if line and not line.startswith("#")]
    assert [int(row[0]) for row in rows] == list(OUTPUT_IDS)
    assert [row[1] for row in rows[1:]] == list(CLASS_NAMES[1:])


# --- patch sampling -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subject(miccai: Path) -> dict[str, torch.Tensor]:
    """The fixture's training subject as DeepNAT sees it: normalised T1, classes, brain mask, coordinates."""
    image = nib.load(str(miccai / "training-images" / "1000_3.nii.gz"))
    t1 = np.asarray(image.dataobj).astype(np.float32)
    labels = _volume(miccai / "training-labels" / "1000_3_glm.nii.gz")
    classes = MapLabels(structure_map())(labels)
    mask = brain_mask_from_labels(labels)
    coords, _ = coordinate_maps(mask, image.affine)
    return {
        "image": torch.from_numpy(np.clip(t1 / np.percentile(t1[mask], 99), 0, 1.2)[None]),
        "label": torch.from_numpy(classes[None]),
        "mask": torch.from_numpy(mask[None].astype(np.float32)),
        "coords": torch.from_numpy(coords),
        "id": "1000",
    }


def test_sampler_balances_structures_with_white_and_grey_matter_doubled(subject: dict) -> None:
    weights = default_class_weights(2)
    sampler = RandDeepNATPatchesd("image", stage=2, num_samples=29 * 4)  # 21 structures + 4 doubled = 29 shares
    sampler.set_random_state(0)
    samples = sampler(subject)
    centres = torch.stack([s["centre"] for s in samples])
    classes = subject["label"][0][tuple(centres.T)]
    counts = torch.bincount(classes.long(), minlength=26).tolist()
    assert counts == [0] + [4 * int(weights[c]) for c in range(1, 26)]
    first = samples[0]
    assert first["image"].shape == (1, 23, 23, 23) and first["id"] == "1000"
    x, y, z = first["centre"].tolist()
    assert torch.equal(first["image"][0, 11, 11, 11], subject["image"][0, x, y, z])
    assert torch.equal(first["coords"], subject["coords"][:, x, y, z])
    assert first["label"].tolist() == [
        int(subject["label"][0, x + a, y + b, z + c])
        for a, b, c in [(0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
    ]


def test_sampler_stage_one_draws_half_foreground_inside_the_mask(subject: dict) -> None:
    sampler = RandDeepNATPatchesd("image", stage=1, num_samples=200)
    sampler.set_random_state(3)
    samples = sampler(subject)
    centres = torch.stack([s["centre"] for s in samples])
    assert subject["mask"][0][tuple(centres.T)].all()
    foreground = torch.stack([s["label"][0] for s in samples])
    assert int(foreground.sum()) == 100 and set(torch.cat([s["label"] for s in samples]).tolist()) == {0, 1}


def test_sampler_is_deterministic_given_its_seed(subject: dict) -> None:
    def centres(seed: int) -> torch.Tensor:
        sampler = RandDeepNATPatchesd("image", stage=2, num_samples=64)
        sampler.set_random_state(seed)
        return torch.stack([s["centre"] for s in sampler(subject)])

    assert torch.equal(centres(5), centres(5))
    assert not torch.equal(centres(5), centres(6))
