"""Shared fixtures. Tests read the real raw data beside the project (../shared/data) unless told otherwise."""

from pathlib import Path

import pytest

from harness.paths import data_dir


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real raw-data folder; its absence is a setup error, not a reason to skip."""
    return data_dir()
