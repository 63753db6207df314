"""Photometry figures pinned on GalSim Roman scenes (issue 9), with PSF files and estimated PSFs.

Each scene (``tests/dia/roman_scenes.py``: GalSim's Roman R062 PSFs on a different SCA per
exposure, dithers, rolls, ~400 stars per 512^2 with saturated ones, a Sersic host next to the
supernova, a bad column, hot pixels, one unreadable image) goes through the pipeline as
``photometry run`` runs it; the figures are pooled over the seeds, as the benchmark
(``benchmarks/roman_quality.py``) pools them. The seeds here are not the ones the pipeline was
developed on (0-3).

What is pinned, against issue 9's targets:

- PSF files: flux scale within 1 % (target 0.5 %; 0.999 over seeds 0-3 at 512^2), pull std in
  [0.75, 1.5] (target [0.9, 1.15]; 1.06 over seeds 0-3, 1.39 on seeds 11-12 at 384^2),
  null-epoch mean pull within +-0.8 (target +-0.3; the mean of a few correlated pulls per seed
  scatters by ~0.4), bright-epoch median error under 1 % (target 0.5 %), kernel sums within
  3 % of 1 (every image has one zero point), no good row flagged. Before issue 9's fixes the
  scale was 1.037 and the pull std 2.9: these bounds fail on that code.
- Estimated PSFs: flux scale within 4 % (target 1 %; within 1 % pooled over seeds 0-4 at 512^2,
  1.03 here: 320^2 holds few stars) and the instrument's encircled energy used; pull std in
  [0.6, 1.5] (target [0.9, 1.15]; 0.88 here): the error bars carry the estimated PSF's own
  error (``measure.psf_error``), without which it was 1.87 here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.dia.roman_scenes import make_scene, write_lists_without_psf

pytestmark = pytest.mark.slow

SEEDS = (11, 12)
BRIGHT = 5000.0


def _run(scene: Path, out: Path, psf_files: bool) -> list[dict[str, Any]]:
    from orchestrator.dia import pipeline
    from orchestrator.dia.pipeline.config import PipelineConfig

    suffix = ""
    if not psf_files:  # the same lists without their psf column: PSFs estimated from stars
        write_lists_without_psf(scene)
        suffix = "_est"
    obj = json.loads((scene / "object.json").read_text())
    config = PipelineConfig(
        oid=str(obj["oid"]), ra=obj["ra"], dec=obj["dec"], band=obj["band"], outdir=out
    )
    result = pipeline.run(
        config,
        scene / f"templates{suffix}.txt",
        scene / f"science{suffix}.txt",
        base_path=scene,
        progress=False,
    )
    truth = {
        str((scene / t["science_path"]).resolve()): float(t["true_flux"])
        for t in csv.DictReader((scene / "truth.csv").open())
    }
    return [{**r, "true": truth[str(Path(r["science_path"]).resolve())]} for r in result.rows]


def _figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    ok = [r for r in rows if r["success"]]
    f = np.array([r["flux"] for r in ok])
    e = np.array([r["flux_err"] for r in ok])
    t = np.array([r["true"] for r in ok])
    lit, bright = t > 0, t > BRIGHT
    pull = (f - t) / e
    return {
        "scale": float(np.average(f[lit] / t[lit], weights=(t[lit] / e[lit]) ** 2)),
        "pull_std": float(np.std(pull)),
        "null_pull": float(np.mean(pull[~lit])),
        "bright_err": float(np.median(f[bright] / t[bright] - 1)),
        "ksum_err": float(np.max(np.abs(np.array([r["kernel_sum"] for r in ok]) - 1))),
        "flagged": float(sum(1 for r in ok if r["flag"])),
        "failed": float(len(rows) - len(ok)),
    }


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("roman_accuracy")
    out = []
    for seed in SEEDS:
        made = make_scene(root / f"seed{seed}", size=320, n_templates=2, n_epochs=6, seed=seed)
        out.append(made.out)
    return out


def test_with_psf_files_fluxes_and_errors_are_right(scenes: list[Path], tmp_path: Path) -> None:
    rows = [r for s in scenes for r in _run(s, tmp_path / s.name, psf_files=True)]
    fig = _figures(rows)
    print(fig)
    assert fig["failed"] == 2 * len(SEEDS)  # the unreadable science image's two rows, no more
    assert abs(fig["scale"] - 1) < 0.01
    assert 0.75 <= fig["pull_std"] <= 1.5
    assert abs(fig["null_pull"]) < 0.8
    assert abs(fig["bright_err"]) < 0.01
    assert fig["ksum_err"] < 0.03
    assert fig["flagged"] == 0
    assert all(r["psf_flux_err"] == 0 for r in rows if r["success"])  # PSF files: no PSF term


def test_with_estimated_psfs_the_flux_scale_holds(scenes: list[Path], tmp_path: Path) -> None:
    rows = [r for s in scenes for r in _run(s, tmp_path / s.name, psf_files=False)]
    fig = _figures(rows)
    print(fig)
    # measured 1.029 and 0.88 on these seeds (2026-11-29, fourth session; the pull std was 1.87
    # before the PSF's own error joined flux_err); the scale's target (1 %) is not met on these
    # small images: these bounds guard what holds
    assert abs(fig["scale"] - 1) < 0.04
    assert 0.6 <= fig["pull_std"] <= 1.5
    psf_terms = [r["psf_flux_err"] for r in rows if r["success"] and r["flux"] > 5000]
    assert psf_terms
    assert all(t > 0 for t in psf_terms)
    notes = {r["notes"] for r in rows if r["success"]}
    assert any("instrument's encircled energy" in n for n in notes), notes
