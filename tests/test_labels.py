import numpy as np
import torch

from neurobundles.labels import read_lut, tissue_map
from neurobundles.transforms import MapLabels


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
