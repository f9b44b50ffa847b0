"""Shared fixtures. Tests read the real raw data beside the project (../shared/data) unless told otherwise."""

import tempfile
from pathlib import Path

import pytest
from plugin_example import install_in_process
from tiny_world import make_world

from harness.paths import data_dir


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: the contract tests are parametrised over the registries' names, and the example plugin
    # (examples/harness-plugin-example, found through its entry points) must be among them.
    install_in_process(Path(tempfile.mkdtemp(prefix="harness-plugin-metadata-")))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real raw-data folder; its absence is a setup error, not a reason to skip."""
    return data_dir()


@pytest.fixture
def world(tmp_path, monkeypatch) -> dict[str, Path]:
    """The tiny runner world (tests/tiny_world.py) in this test's folder, with its own harness cache."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return make_world(tmp_path)
