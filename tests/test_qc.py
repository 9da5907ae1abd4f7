import numpy as np

from neurobundles.outputs import qc_figure


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
