"""How much does a bundle's output change when the image is blurred? (the fsaverage question)

    python -m neurobundles.tools.robustness --bundle meshnet_hcp_aparc104 --sigmas "[1, 2]"

An average brain such as FreeSurfer's ``fsaverage`` looks like a blurred single brain. This runs a
bundle's own preprocessing, network and inferer on one image and on Gaussian-blurred copies of it,
and reports the mean Dice between each blurred result and the sharp one (1.0: blur changes nothing).
"""

from __future__ import annotations

import json
from typing import Any

import fire
import numpy as np
import torch
from scipy import ndimage

from neurobundles import zoo
from neurobundles.metrics import dice_per_class

__all__ = ["blur_sensitivity", "main"]


def blur_sensitivity(bundle: str, image: str | None = None, sigmas: tuple[float, ...] = (1.0, 2.0)) -> dict[str, Any]:
    """Mean Dice (over classes present) between the labels of the sharp image and of blurred copies."""
    path = image or str(zoo.fetch_sample("t1_crop"))
    parser = zoo.bundle_parser(bundle, device="$torch.device('cpu')")
    load, *normalise = parser.get_parsed_content("preprocessing").transforms
    network, inferer = zoo.load_network(bundle), parser.get_parsed_content("inferer")
    classes = int(zoo.load_metadata(bundle)["network_data_format"]["outputs"]["pred"]["num_channels"])
    loaded = load({"image": path})

    def segment(blur: float) -> np.ndarray:
        data = dict(loaded)
        if blur:
            data["image"] = data["image"].clone()
            data["image"][0] = torch.from_numpy(ndimage.gaussian_filter(data["image"][0].numpy(), blur))
        for transform in normalise:
            data = transform(data)
        with torch.no_grad():
            return inferer(data["image"][None], network)[0, 0].numpy()

    sharp = segment(0.0)
    agreement = {}
    for sigma in sigmas:
        scores = dice_per_class(segment(sigma), sharp, classes)[1:]
        agreement[f"sigma_{sigma:g}mm"] = float(np.nanmean(scores))
    return {"bundle": bundle, "image": path, "mean_dice_vs_sharp": agreement}


def main(bundle: str = "meshnet_hcp_tissue", image: str | None = None, sigmas: tuple[float, ...] = (1.0, 2.0)) -> None:
    """Print the agreement of blurred with sharp segmentations as JSON."""
    print(json.dumps(blur_sensitivity(bundle, image, tuple(float(s) for s in sigmas)), indent=2))


if __name__ == "__main__":
    fire.Fire(main)
