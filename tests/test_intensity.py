import numpy as np
import torch

from neurobundles.transforms import ConformIntensity, robust_range


def test_upper_bound_is_the_98th_percentile_of_non_zero_voxels():
    rng = np.random.default_rng(0)
    values = np.zeros(200_000, dtype=np.float32)
    values[:120_000] = rng.gamma(4.0, 50.0, 120_000)
    low, upper = robust_range(values, 0.98)
    exact = np.quantile(values[:120_000], 0.98)
    bin_width = (values.max() - values.min()) / 1000
    assert low == 0.0
    assert abs(upper - exact) <= 2 * bin_width


def test_output_is_integer_valued_0_to_255_and_saturates_bright_outliers():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.gamma(4.0, 50.0, (1, 30, 30, 30)).astype(np.float32))
    image[0, 0, 0, 0] = 1e6
    out = ConformIntensity()(image)
    assert out.min() == 0 and out.max() == 255
    assert torch.equal(out, out.round())
    assert (out == 255).float().mean() < 0.05


def test_constant_image_does_not_divide_by_zero():
    out = ConformIntensity()(torch.full((1, 4, 4, 4), 7.0))
    assert torch.isfinite(out).all()
