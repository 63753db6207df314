"""The core install is the daemon's: `pip install orchestrator` brings no numerical stack, and
a command that needs an extra says which one when it is missing."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
HEAVY = {"numba", "numpy", "scipy", "astropy", "matplotlib", "threadpoolctl", "pyarrow", "cupy"}


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_core_dependencies_hold_no_numerical_stack() -> None:
    """What pip installs without extras is `dependencies` alone; the photometry pipeline's
    packages are in the `photometry` extra (and CuPy in `gpu`)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = _names(project["dependencies"])
    assert {"pydantic", "apscheduler", "watchdog", "structlog"} <= core
    assert not core & HEAVY, core & HEAVY
    extras = project["optional-dependencies"]
    assert {"numba", "numpy", "scipy", "astropy", "matplotlib"} <= _names(extras["photometry"])
    assert any(name.startswith("cupy") for name in _names(extras["gpu"]))


# Runs the command line with numpy made unimportable, as in an install without the extra.
WITHOUT_NUMPY = """
import sys
from importlib.abc import MetaPathFinder

class NoNumpy(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoNumpy())
from orchestrator.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_photometry_without_its_extra_says_how_to_install_it(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMPY, "photometry", "run", "--object", "x.json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert "pip install 'orchestrator[photometry]'" in run.stderr
    assert "numpy" in run.stderr
    listed = subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMPY, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert listed.returncode == 0
    assert "photometry" in listed.stdout
