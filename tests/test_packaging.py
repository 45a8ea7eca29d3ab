"""The package metadata the napari hub and PyPI show: classifiers, project URLs, the
README's screenshots (absolute URLs to files that exist in docs/images) and the
manifest entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
RAW = "https://raw.githubusercontent.com/napari-unetseg/napari-unetseg/main/"
REPO = "https://github.com/napari-unetseg/napari-unetseg"


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_hub_classifiers_and_description(project):
    assert "Framework :: napari" in project["classifiers"]
    assert any(c.startswith("License :: OSI Approved") for c in project["classifiers"])
    assert 20 <= len(project["description"]) <= 120
    assert project["readme"] == "README.md"
    assert project["license"] == "BSD-3-Clause"


def test_hub_project_urls(project):
    urls = project["urls"]
    # the napari hub shows these four keys by name
    for key in ("Source Code", "Documentation", "Bug Tracker", "User Support"):
        assert urls.get(key, "").startswith("https://"), key
    assert urls["Source Code"] == REPO
    assert urls["Bug Tracker"].startswith(REPO)


def test_manifest_entry_point_and_docs_extra(project):
    entry = project["entry-points"]["napari.manifest"]
    assert entry == {"napari-unetseg": "napari_unetseg:napari.yaml"}
    assert (ROOT / "src" / "napari_unetseg" / "napari.yaml").is_file()
    docs = " ".join(project["optional-dependencies"]["docs"])
    for package in ("mkdocs", "mkdocs-material", "mkdocstrings"):
        assert package in docs


def test_readme_screenshots_are_absolute_and_exist(readme):
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert len(images) >= 4, images
    for url in images:
        # PyPI and the napari hub render the README outside the repository
        assert url.startswith(RAW), f"{url} is not an absolute raw.githubusercontent URL"
        path = ROOT / url[len(RAW) :]
        assert path.is_file(), f"{url} points at {path}, which does not exist"
    names = {Path(u).name for u in images}
    assert {"annotate.png", "train.png", "predict.png", "evaluate.png"} <= names


def test_readme_relative_links_exist(readme):
    links = re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s#]+)[^)]*\)", readme)
    relative = [link for link in links if not re.match(r"^[a-z]+:", link)]
    assert relative, "the README links no document of the repository"
    for link in relative:
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"
