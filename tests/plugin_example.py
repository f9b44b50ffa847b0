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


def entry_points_text() -> str:
    """The ``entry_points.txt`` of the example plugin, from the ``[project.entry-points]`` of its pyproject."""
    project = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = []
    for group, points in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in points.items()]
        lines.append("")
    return "\n".join(lines)


def install_in_process(folder: Path) -> None:
    """Make the example plugin importable and discoverable in this process (``folder``: where its metadata goes)."""
    project = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = folder / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(entry_points_text(), encoding="utf-8")
    for path in (str(folder), str(PLUGIN_ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
