"""Bundle configs come from one source per family, versions from requirements.txt, weights from pinned commits."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from conftest import REPO
from neurobundles.zoo import bundle_names, bundle_path, families

FAMILY_BUNDLES = sorted(p.parent.name for p in (REPO / "bundles").glob(f"*/{families.FAMILY_FILE}"))


def test_every_bundle_belongs_to_a_family():
    assert bundle_names() == FAMILY_BUNDLES


def test_generated_configs_and_metadata_match_their_family_sources():
    assert families.check() == [], "run: python -m neurobundles.zoo.families"


@pytest.fixture
def checkout_copy(tmp_path, monkeypatch):
    """A copy of the checkout's bundles and requirements, which the generator then reads instead."""
    shutil.copytree(REPO / "bundles", tmp_path / "bundles")
    shutil.copy(REPO / "requirements.txt", tmp_path / "requirements.txt")
    monkeypatch.setattr(families, "checkout_root", lambda: tmp_path)
    return tmp_path


def test_a_template_change_is_drift_until_regenerated(checkout_copy):
    template = checkout_copy / "bundles" / "_families" / "meshnet_hcp" / "base.json"
    content = json.loads(template.read_text())
    content["output_ext"] = ".mgz"
    template.write_text(json.dumps(content, indent=4))
    drifted = families.check()
    assert "meshnet_hcp_tissue/configs/inference.json" in drifted
    assert "meshnet_mindboggle_dkt31/configs/inference.json" not in drifted
    families.generate()
    assert families.check() == []
    generated = json.loads((checkout_copy / "bundles" / "meshnet_hcp_aparc104" / "configs" / "train.json").read_text())
    assert generated["output_ext"] == ".mgz"


def test_a_bundle_value_overrides_the_family_template(checkout_copy):
    spec_file = checkout_copy / "bundles" / "meshnet_hcp_tissue" / families.FAMILY_FILE
    spec = json.loads(spec_file.read_text())
    spec["set"]["network_def#channels"] = 7
    spec_file.write_text(json.dumps(spec))
    rendered = families.render(checkout_copy / "bundles" / "meshnet_hcp_tissue")
    for name in ("inference", "train"):
        assert json.loads(rendered[f"configs/{name}.json"])["network_def"]["channels"] == 7


def test_an_override_of_an_id_no_config_has_is_refused(checkout_copy):
    spec_file = checkout_copy / "bundles" / "meshnet_hcp_tissue" / families.FAMILY_FILE
    spec = json.loads(spec_file.read_text())
    spec["set"]["netwrok_def#channels"] = 7
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(KeyError, match="netwrok_def"):
        families.render(checkout_copy / "bundles" / "meshnet_hcp_tissue")


def test_a_version_bump_in_requirements_reaches_every_metadata(checkout_copy):
    requirements = checkout_copy / "requirements.txt"
    requirements.write_text(re.sub(r"monai==\S+", "monai==9.9.9", requirements.read_text()))
    assert len([path for path in families.check() if path.endswith("metadata.json")]) == len(FAMILY_BUNDLES)
    families.generate()
    metadata = json.loads((checkout_copy / "bundles" / "meshnet_hcp_dkt50" / "configs" / "metadata.json").read_text())
    assert metadata["monai_version"] == "9.9.9"


@pytest.mark.parametrize("bundle", bundle_names())
def test_metadata_versions_are_the_pinned_ones(bundle):
    pins = families.pinned_versions()
    metadata = json.loads((bundle_path(bundle) / "configs" / "metadata.json").read_text())
    assert (metadata["monai_version"], metadata["pytorch_version"]) == (pins["monai"], pins["torch"])
    for name, version in metadata["required_packages_version"].items():
        assert version == (pins.get(name.lower()) or __import__("neurobundles").__version__), name


@pytest.mark.parametrize("bundle", bundle_names())
def test_large_file_urls_are_pinned_to_a_commit(bundle):
    listing = bundle_path(bundle) / "large_files.yml"
    entries = yaml.safe_load(listing.read_text())["large_files"] if listing.is_file() else []
    for entry in entries:
        assert re.search(r"/raw/[0-9a-f]{40}/", entry["url"]), f"{listing}: {entry['url']} follows a branch"
        assert re.fullmatch(r"[0-9a-f]{64}", entry["hash_val"])
