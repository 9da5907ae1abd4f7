"""Bundles as Model Zoo artefacts: finding them, their config-time helpers, published files, packaging, checks.

``packaging`` and ``conformance`` are imported on use (``neurobundles.zoo.packaging``), not here.
"""

from .config import (
    bundle_root,
    label_names,
    load_bundle_weights,
    load_network,
    measured_paths,
    sibling_bundle,
    trained_checkpoint,
)
from .devices import auto_device
from .discovery import (
    UnknownBundleError,
    bundle_names,
    bundle_parser,
    bundle_path,
    config_files,
    create_workflow,
    is_bundle,
    load_metadata,
    run_workflow,
    run_workflow_processes,
)
from .hub import RemoteFile, bundle_file, bundle_remote_files, fetch, fetch_large_files, is_cached, large_file
from .samples import SAMPLES, fetch_sample, fetch_sample_subjects, fetch_subjects, subjects_dir

__all__ = [
    "SAMPLES",
    "RemoteFile",
    "UnknownBundleError",
    "auto_device",
    "bundle_file",
    "bundle_names",
    "bundle_parser",
    "bundle_path",
    "bundle_remote_files",
    "bundle_root",
    "config_files",
    "create_workflow",
    "fetch",
    "fetch_large_files",
    "fetch_sample",
    "fetch_sample_subjects",
    "fetch_subjects",
    "is_bundle",
    "is_cached",
    "label_names",
    "large_file",
    "load_bundle_weights",
    "load_metadata",
    "load_network",
    "measured_paths",
    "run_workflow",
    "run_workflow_processes",
    "sibling_bundle",
    "subjects_dir",
    "trained_checkpoint",
]
