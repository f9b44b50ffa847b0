"""The example plugin package (examples/harness-plugin-example) made visible to this test process as if installed.

``install_in_process`` writes the ``.dist-info`` folder pip would write for it (its entry points read from its own
pyproject.toml) into a temporary folder and puts that folder and the package's source folder on ``sys.path``:
the registries then find its dataset, retriever and method through ``importlib.metadata`` exactly as they find an
installed plugin's, so every contract test that runs over a registry's names covers them too.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parent.parent / "examples" / "harness-plugin-example"


def write_distribution(root: Path, name: str, version: str, entry_points: str) -> None:
    """The ``.dist-info`` folder pip writes for an installed package, with just its name, version and entry points."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def install_in_process(folder: Path) -> None:
    """Make the example plugin importable and discoverable in this process (``folder``: where its metadata goes);
    its entry points are the ``[project.entry-points]`` of its own pyproject.toml."""
    project = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in points.items()), ""]
    write_distribution(folder, project["name"], project["version"], "\n".join(lines))
    for path in (str(folder), str(PLUGIN_ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
