import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from neurobundles.labels import LabelTable, LutEntry, write_lut
from neurobundles.transforms import ClassesToLabels, left_hemisphere_mask

LEFT_IDS = [2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 17, 18, 26, 28, *range(1000, 1036)]
RIGHT_IDS = [41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60, *range(2000, 2036)]


def test_fsaverage_hemispheres_are_recovered(fsaverage):
    image = nib.load(str(fsaverage / "mri" / "aparc+aseg.mgz"))
    labels = np.asarray(image.dataobj)
    left = left_hemisphere_mask(labels > 0, image.affine)
    assert left[np.isin(labels, LEFT_IDS)].mean() > 0.999
    assert (~left)[np.isin(labels, RIGHT_IDS)].mean() > 0.999


def test_a_turned_head_still_splits(fsaverage):
    from scipy import ndimage

    image = nib.load(str(fsaverage / "mri" / "aparc+aseg.mgz"))
    turned = ndimage.rotate(np.asarray(image.dataobj), 10, axes=(0, 2), reshape=False, order=0)
    left = left_hemisphere_mask(turned > 0, image.affine)
    assert left[np.isin(turned, LEFT_IDS)].mean() > 0.975
    assert (~left)[np.isin(turned, RIGHT_IDS)].mean() > 0.975


def test_classes_are_split_into_left_and_right_ids(tmp_path):
    entries = {0: ("Unknown", (0, 0, 0)), 16: ("Brain-Stem", (1, 1, 1)), 17: ("Left-Hippocampus", (2, 2, 2))}
    entries[53] = ("Right-Hippocampus", (2, 2, 2))
    write_lut(tmp_path / "lut.txt", {value: LutEntry(*entry) for value, entry in entries.items()})
    table = LabelTable({"0": "background", "1": "Hippocampus", "2": "Brain-Stem"}, tmp_path / "lut.txt")
    classes = np.zeros((1, 20, 10, 10), np.float32)
    classes[0, 2:8] = 1  # low x: the patient's left in a RAS grid
    classes[0, 12:18] = 1  # high x: right
    classes[0, 9:11, :, 5] = 2
    out = ClassesToLabels(table)(MetaTensor(torch.from_numpy(classes), affine=torch.eye(4)))
    assert set(np.unique(out[0, 2:8].numpy())) == {17}
    assert set(np.unique(out[0, 12:18].numpy())) == {53}
    assert set(np.unique(out[0, 9:11, :, 5].numpy())) == {16}


@pytest.mark.parametrize("bad", [3.0, -1.0, 70000.0, float("nan")])
def test_class_indices_outside_the_table_are_refused_not_wrapped(tmp_path, bad):
    # 70000 would wrap to a valid int16 index if the range were checked after the cast
    lut = {0: LutEntry("Unknown", (0, 0, 0)), 2: LutEntry("WM", (1, 1, 1)), 3: LutEntry("GM", (2, 2, 2))}
    write_lut(tmp_path / "lut.txt", lut)
    table = LabelTable({"0": "background", "1": "WM", "2": "GM"}, tmp_path / "lut.txt")
    classes = torch.zeros(1, 4, 4, 4)
    classes[0, 1, 1, 1] = bad
    with pytest.raises(ValueError, match=r"class index outside 0\.\.2"):
        ClassesToLabels(table)(classes)
