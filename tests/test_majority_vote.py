"""Majority-vote inference from sub-volumes, checked against a plain per-voxel vote."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from neurobundles.inferers import MajorityVoteInferer
from neurobundles.subvolumes import crop_sigmas, grid_starts, subvolume_starts


def _naive_vote(volume: torch.Tensor, network: nn.Module, starts: np.ndarray, roi: tuple[int, ...]) -> np.ndarray:
    """One sub-volume and one voxel at a time: the definition, with no vectorisation."""
    ballots: dict[tuple[int, int, int], list[int]] = {}
    with torch.no_grad():
        for start in starts:
            x, y, z = (int(s) for s in start)
            patch = volume[None, :, x : x + roi[0], y : y + roi[1], z : z + roi[2]]
            classes = network(patch)[0].argmax(dim=0)
            for i in range(roi[0]):
                for j in range(roi[1]):
                    for k in range(roi[2]):
                        ballots.setdefault((x + i, y + j, z + k), []).append(int(classes[i, j, k]))
    out = np.zeros(volume.shape[1:], dtype=np.int64)
    for voxel, votes in ballots.items():
        (winner, top), *rest = Counter(votes).most_common()
        out[voxel] = 0 if rest and rest[0][1] == top else winner
    return out


@pytest.fixture
def random_net():
    torch.manual_seed(0)
    return nn.Conv3d(2, 4, kernel_size=3, padding=1).eval()  # zero padding: overlapping sub-volumes disagree


def test_votes_equal_the_per_voxel_definition(random_net):
    torch.manual_seed(1)
    volume = torch.randn(2, 13, 11, 12)
    roi, inferer = (5, 4, 6), MajorityVoteInferer(roi_size=(5, 4, 6), num_samples=40, sigma=3.0, sw_batch_size=7)
    starts = subvolume_starts(volume.shape[1:], roi, 40, np.random.default_rng(inferer.seed), crop_sigmas(3.0, None, 3))
    expected = _naive_vote(volume, random_net, starts, roi)
    assert (expected == 0).sum() > 0 and len(np.unique(expected)) == 4
    ours = inferer(volume[None], random_net)
    assert ours.shape == (1, 1, 13, 11, 12)
    assert np.array_equal(ours[0, 0].numpy().astype(np.int64), expected)


def test_sub_volume_batch_size_does_not_change_the_result(random_net):
    volume = torch.randn(1, 2, 12, 12, 12)
    one = MajorityVoteInferer(roi_size=4, num_samples=60, sigma=2.0, sw_batch_size=1)(volume, random_net)
    many = MajorityVoteInferer(roi_size=4, num_samples=60, sigma=2.0, sw_batch_size=64)(volume, random_net)
    assert torch.equal(one, many)


class _FirstHalfSecondHalf(nn.Module):
    """Class 1 in the first half of every sub-volume along x, class 2 in the second half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[2] // 2
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 1, :half] = 1
        logits[:, 2, half:] = 1
        return logits


def test_tied_votes_give_background():
    """Grid cubes at x 0 and 4, plus the middle cube at x 2 (σ = 0): x 2–5 get one vote for 1 and one for 2."""
    volume = torch.zeros(1, 1, 8, 4, 4)
    inferer = MajorityVoteInferer(roi_size=4, num_samples=3, sigma=0.0)
    labels = inferer(volume, _FirstHalfSecondHalf())[0, 0, :, 0, 0]
    assert labels.tolist() == [1, 1, 0, 0, 0, 0, 2, 2]


class _Always(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 2] = 1
        return logits


def test_voxels_no_sub_volume_reaches_are_background():
    """10 voxels and cubes of 4: the centred grid covers 1–8, so voxels 0 and 9 get no vote."""
    labels = MajorityVoteInferer(roi_size=(4, 10, 10), num_samples=0)(torch.zeros(1, 1, 10, 10, 10), _Always())
    assert labels[0, 0, :, 5, 5].tolist() == [0, 2, 2, 2, 2, 2, 2, 2, 2, 0]


def test_grid_is_centred_and_does_not_overlap():
    starts = grid_starts((256, 256, 256), (38, 38, 38))
    assert len(starts) == 216 and sorted(set(starts[:, 0].tolist())) == [14, 52, 90, 128, 166, 204]


def test_sub_volumes_are_the_grid_then_gaussian_draws_up_to_the_number_asked():
    starts = subvolume_starts((64, 64, 64), (16, 16, 16), 100, np.random.default_rng(0), (16.0, 16.0, 16.0))
    assert len(starts) == 100 and np.array_equal(starts[:64], grid_starts((64, 64, 64), (16, 16, 16)))
    assert len(subvolume_starts((64, 64, 64), (16, 16, 16), 10, np.random.default_rng(0), (16.0,) * 3)) == 64


def test_metadata_of_the_input_is_kept():
    volume = MetaTensor(torch.zeros(1, 1, 8, 8, 8), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    labels = MajorityVoteInferer(roi_size=4, num_samples=8)(volume, _Always())
    assert isinstance(labels, MetaTensor) and torch.equal(labels.affine, volume.affine)
