"""The core install: size of a fresh virtual environment with `pip install <checkout>` (no
extras) and the daemon's import time in it. Prints figures, asserts nothing.

    .venv/bin/python benchmarks/slim_install.py [--keep DIR]

Issue 10's target: under 150 MB. The environment is made with the running Python's ``venv``
(pip included, as a user gets it), the package installed from this checkout as a wheel (not
editable), then: its size on disk (``du``), which heavy packages it holds (none expected), the
median of five fresh imports of ``orchestrator.daemon`` and ``orchestrator.cli`` (what
``orchestrator run`` loads before it starts), and ``orchestrator validate jobs.d`` run in it.
Needs PyPI (or a pip configured with a mirror).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("numba", "numpy", "scipy", "astropy", "matplotlib", "pyarrow", "cupy")


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="make the venv here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venv = args.keep or Path(tmp) / "venv"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        base_mb = du_mb(venv)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
            check=True,
        )
        install_s = time.perf_counter() - started
        size_mb = du_mb(venv)
        listing = subprocess.run(
            [str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
        ).stdout
        names = sorted(line.split("==")[0].lower() for line in listing.split())
        heavy = [n for n in names if n.startswith(HEAVY)]
        code = (
            "import time; t = time.perf_counter(); import orchestrator.daemon, orchestrator.cli;"
            " print(time.perf_counter() - t)"
        )
        imports = [
            float(subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout)
            for _ in range(5)
        ]
        validate = subprocess.run(
            [str(venv / "bin" / "orchestrator"), "validate", str(REPO / "jobs.d")],
            capture_output=True,
            text=True,
        )
        print(
            f"core install: {size_mb:.0f} MB ({base_mb:.0f} MB of it the bare venv with pip), "
            f"{len(names)} packages, made in {install_s:.0f} s (target: under 150 MB)"
        )
        print(f"  packages: {' '.join(names)}")
        print(f"  heavy packages: {', '.join(heavy) or 'none'}")
        median = statistics.median(imports)
        each = " ".join(f"{t:.3f}" for t in imports)
        print(f"  import orchestrator.daemon + cli: median {median:.3f} s (five fresh: {each})")
        print(f"  orchestrator validate jobs.d: exit {validate.returncode}")


if __name__ == "__main__":
    main()
