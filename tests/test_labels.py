import nibabel as nib
import numpy as np
import pytest
import torch

from neurobundles.labels import read_lut, tissue_map
from neurobundles.transforms import KeepLargestComponent, MapLabels


def test_freesurfer_ids_map_to_tissue_classes():
    mapping = tissue_map(white=1, grey=2)
    labels = torch.tensor([[0, 2, 41, 3, 42, 1028, 2035, 17, 4, 24, 251, 16, 77]], dtype=torch.float32)
    out = MapLabels(mapping)(labels)
    assert out.tolist() == [[0, 1, 1, 2, 2, 2, 2, 2, 0, 0, 1, 1, 0]]


def test_unknown_and_out_of_table_ids_become_background():
    out = MapLabels({5: 1})(np.array([5, 6, 9999, -3]))
    assert out.tolist() == [1, 0, 0, 0]


def test_lut_names_every_id_of_fsaverage_aparc_aseg(shared_data):
    import nibabel as nib

    lut = read_lut(shared_data / "freesurfer" / "FreeSurferColorLUT.txt")
    ids = np.unique(np.asarray(nib.load(str(shared_data / "freesurfer/fsaverage/mri/aparc+aseg.mgz")).dataobj))
    assert set(ids.tolist()) <= set(lut)
    assert lut[17].name == "Left-Hippocampus" and lut[1028].name == "ctx-lh-superiorfrontal"


@pytest.mark.parametrize("connectivity", [1, 3])
def test_largest_component_equals_monai(t1_crop, connectivity):
    """Thresholded real anatomy has many components of every shape: the result must match MONAI's exactly."""
    from monai.data import MetaTensor
    from monai.transforms import KeepLargestConnectedComponent

    image = np.asarray(nib.load(str(t1_crop)).dataobj)[60:190, 60:190, 60:190].astype(np.float32)
    labels = np.zeros_like(image)
    labels[image > np.percentile(image, 88)] = 1
    labels[image > np.percentile(image, 96)] = 2
    volume = MetaTensor(torch.from_numpy(labels)[None], affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    ours = KeepLargestComponent(connectivity)(volume)
    expected = KeepLargestConnectedComponent(independent=False, connectivity=connectivity)(volume.clone())  # in place
    assert (ours != volume).sum() > 0 and torch.equal(ours.as_tensor(), expected.as_tensor())
    assert isinstance(ours, MetaTensor) and torch.equal(ours.affine, volume.affine)


def test_largest_component_rejects_a_label_map_without_channel():
    with pytest.raises(ValueError, match="channel-first"):
        KeepLargestComponent()(torch.zeros(4, 4, 4))
