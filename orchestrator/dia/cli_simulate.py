"""``photometry simulate``: a synthetic Roman-like data set with supernovae of known light
curves (:mod:`orchestrator.dia.simulate`), optionally appended to a batch's object table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click


@click.command("simulate")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write the data set into.",
)
@click.option(
    "--size",
    type=click.IntRange(min=128),
    default=1024,
    show_default=True,
    help="Image side in pixels (Roman detectors: 4088).",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=8, show_default=True, help="Science epochs."
)
@click.option(
    "--templates",
    "n_templates",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Template exposures.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--band", default="R062", show_default=True, help="Band name written to the lists.")
@click.option(
    "--oid",
    default="20172782",
    show_default=True,
    help="Object id written to object.json (a batch demo simulates several objects).",
)
@click.option(
    "--table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the object to this PhotometryBatch object table (CSV, made with its header "
    "when absent; list paths relative to its folder).",
)
@click.option(
    "--companions",
    type=click.IntRange(0, 3),
    default=0,
    show_default=True,
    help="Further supernovae on the same images, 50-70 px away (OID-1, OID-2, ...; each with "
    "its truth-OID.csv, and its row in --table): objects a batch measures together.",
)
def simulate_command(
    out: Path,
    size: int,
    epochs: int,
    n_templates: int,
    seed: int,
    band: str,
    oid: str,
    table: Path | None,
    companions: int,
) -> None:
    """Write a synthetic Roman-like data set with a supernova of known light curve.

    Star field, host galaxy, supernova; templates and science epochs with dithers, rotations,
    different PSFs (an oversampled PSF image per exposure in the lists' psf column), noise
    (ERR), bad pixels (DQ), WCS and ZPTMAG. Writes templates.txt, science.txt, truth.csv and
    object.json (oid, ra, dec, band) under OUT; prints the matching `photometry run` line.

    Example: orchestrator photometry simulate --out data --size 512 --epochs 8 --seed 3
    """
    from orchestrator.dia.simulate import simulate

    obj = simulate(
        out,
        size=size,
        epochs=epochs,
        n_templates=n_templates,
        seed=seed,
        band=band,
        oid=oid,
        companions=companions,
    )
    click.echo(json.dumps(obj))
    if table is not None:
        for one in [obj, *({**c, "band": band} for c in obj.get("companions", []))]:
            _append_object_row(table, one, out)
    click.echo(
        f"orchestrator photometry run --oid {obj['oid']} -r {obj['ra']:.8f} -d {obj['dec']:.8f} "
        f"-b {band} -t {out / 'templates.txt'} -s {out / 'science.txt'} -o {out / 'output'}",
        err=True,
    )


def _append_object_row(table: Path, obj: dict[str, Any], out: Path) -> None:
    """One row of a batch's object table, the header first when the file is new."""
    folder = table.resolve().parent
    lists = [Path(os.path.relpath(out.resolve() / name, folder)) for name in LIST_NAMES]
    new = not table.exists()
    with table.open("a") as fh:
        if new:
            fh.write("oid,ra,dec,band,templates,science\n")
        fh.write(f"{obj['oid']},{obj['ra']!r},{obj['dec']!r},{obj['band']},{lists[0]},{lists[1]}\n")


LIST_NAMES = ("templates.txt", "science.txt")
