import numpy as np

from neurobundles.outputs import qc_figure
from neurobundles.outputs.qc import _centre


def test_left_hemisphere_appears_on_the_right_of_the_coronal_view(tmp_path):
    """Radiological convention: the patient's left is drawn on the viewer's right."""
    import matplotlib.image

    image = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32)
    labels = np.zeros((64, 64, 64), np.uint8)
    labels[40:60, 20:44, 20:44] = 1  # high indices along axis 0: the patient's left in the LIA grid below
    lia = np.array([[-1.0, 0, 0, 32], [0, 0, 1, -32], [0, -1, 0, 32], [0, 0, 0, 1]])  # axis 0 grows to the left
    path = tmp_path / "qc.png"
    qc_figure(image, labels, lia, {1: (255, 0, 0)}, "test", path)
    picture = matplotlib.image.imread(str(path))
    width = picture.shape[1]
    coronal = picture[:, width // 3 : 2 * width // 3]
    red = (coronal[..., 0] - coronal[..., 1]) > 0.2
    columns = np.nonzero(red.any(axis=0))[0]
    assert columns.size and columns.mean() > coronal.shape[1] / 2


def test_slices_go_through_the_labels_centre_of_mass():
    mask = np.random.default_rng(2).random((30, 40, 50)) > 0.97
    mask[20:28, 5:9, 40:47] = True  # off-centre, so a wrong axis order would show
    assert _centre(mask) == tuple(np.argwhere(mask).mean(0).astype(int))
    assert _centre(np.zeros((30, 40, 51), bool)) == (15, 20, 25)
