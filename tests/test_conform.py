import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from neurobundles.transforms import Conform, Conformd, conform_affine


def _linear_field(shape, affine):
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:]
    return (world[0] + 2 * world[1] + 3 * world[2]).reshape(shape).astype(np.float32)


def test_conformed_affine_is_lia_1mm_and_keeps_the_centre():
    affine = np.diag([1.2, 1.2, 1.2, 1.0])
    affine[:3, 3] = [-120, -140, -100]
    target = conform_affine(affine, (200, 240, 180))
    assert nib.aff2axcodes(target) == ("L", "I", "A")
    assert np.allclose(np.abs(target[:3, :3]).sum(0), 1.0)
    centre_in = affine @ np.array([100, 120, 90, 1])
    assert np.allclose(target @ np.array([128, 128, 128, 1]), centre_in)


def test_already_conformed_image_is_unchanged(t1_crop):
    image = nib.load(str(t1_crop))
    data = np.asarray(image.dataobj, dtype=np.float32)
    out = Conform()(MetaTensor(torch.from_numpy(data)[None], affine=torch.tensor(image.affine)))
    assert np.allclose(out.affine.numpy(), image.affine)
    assert torch.equal(out[0], torch.from_numpy(data))


def test_resampling_is_exact_for_a_linear_intensity_field():
    affine = np.diag([1.2, 1.2, 1.2, 1.0])
    affine[:3, 3] = [-120, -140, -100]
    field = _linear_field((200, 240, 180), affine)
    out = Conform()(MetaTensor(torch.from_numpy(field)[None], affine=torch.tensor(affine)))
    expected = _linear_field((256, 256, 256), out.affine.numpy())
    index = np.vstack([np.stack(np.meshgrid(*[np.arange(256)] * 3, indexing="ij")).reshape(3, -1), np.ones(256**3)])
    source_index = (np.linalg.inv(affine) @ out.affine.numpy() @ index)[:3]
    inside = ((source_index >= 0) & (source_index <= np.array([[199], [239], [179]]))).all(0).reshape((256,) * 3)
    assert inside.sum() > 0.95 * 240 * 256 * 216  # the input field of view, clipped to 256 mm
    assert np.abs(out[0].numpy() - expected)[inside].max() < 1e-2


def test_inverse_returns_labels_to_the_native_grid():
    affine = np.array([[0.0, 0.0, 1.3, -80], [-1.1, 0.0, 0.0, 100], [0.0, 1.0, 0.0, -90], [0, 0, 0, 1]])
    labels = np.zeros((120, 150, 110), dtype=np.float32)
    labels[30:90, 40:110, 20:90] = 1
    labels[50:70, 60:90, 40:70] = 2
    conform = Conformd(keys="label", mode="nearest")
    forward = conform({"label": MetaTensor(torch.from_numpy(labels)[None], affine=torch.tensor(affine))})
    assert forward["label"].shape == (1, 256, 256, 256)
    back = conform.inverse(forward)["label"]
    assert back.shape == (1, 120, 150, 110)
    assert np.allclose(back.affine.numpy(), affine)
    assert (back[0].numpy() == labels).mean() > 0.99


def test_non_metatensor_is_refused():
    with pytest.raises(TypeError, match="MetaTensor"):
        Conform()(torch.rand(1, 8, 8, 8))
