"""``python -m neurobundles.bench --bundle NAME``: the bundle benchmark (:mod:`neurobundles.tools.bench`)."""

import fire

from neurobundles.tools.bench import main

if __name__ == "__main__":
    fire.Fire(main)
