"""Command-line tools built on the bundles: ``bench`` (speed against a baseline), ``compare`` (MeshNet against
the U-Net) and ``robustness`` (label changes under blur). Run as ``python -m neurobundles.tools.<name>``."""
