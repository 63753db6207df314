"""What ``photometry run`` checks of its inputs before any image is read: the object, the
options that are each valid but not together, and the truth table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from orchestrator.dia.pipeline.truth import TruthTable


def truth_table(truth_file: Path | None, object_file: Path | None, log: Any) -> TruthTable | None:
    """The truth table to plot: --truth (a bad one is a usage error), else a truth.csv beside
    --object (`photometry simulate` writes the two together; a bad one is only a warning, since
    nobody asked for it), else None."""
    from orchestrator.dia.pipeline.truth import TruthFormatError, default_truth_path, read_truth

    if truth_file is not None:
        try:
            truth = read_truth(truth_file)
        except TruthFormatError as exc:
            raise click.BadParameter(str(exc), param_hint="--truth") from None
    else:
        found = default_truth_path(object_file)
        if found is None:
            return None
        try:
            truth = read_truth(found)
        except TruthFormatError as exc:
            log.warning("truth_skipped", truth=str(found), reason=str(exc))
            return None
    log.info("truth_table", truth=str(truth.path), n_rows=len(truth.rows))
    return truth


def object_from(
    object_file: Path | None,
    oid: str | None,
    ra: float | None,
    dec: float | None,
    band: str | None,
) -> tuple[str, float, float, str]:
    """The object from the flags, completed from ``--object``; every field is needed."""
    if object_file is not None:
        import json

        try:
            obj = json.loads(object_file.read_text())
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--object") from None
        oid = oid if oid is not None else str(obj.get("oid", "")) or None
        ra = ra if ra is not None else obj.get("ra")
        dec = dec if dec is not None else obj.get("dec")
        band = band if band is not None else obj.get("band")
    for value, hint in ((oid, "--oid"), (ra, "-r/--ra"), (dec, "-d/--dec"), (band, "-b/--band")):
        if value is None:
            raise click.UsageError(f"missing {hint} (give it, or --object FILE)")
    assert oid is not None
    assert ra is not None
    assert dec is not None
    assert band is not None
    return oid, ra, dec, band


def check_options(
    dec: float, psf: str | None, cutout_px: int, kernel_half_width: int, backend: str
) -> None:
    """Options that are each valid but not together, or not on this machine."""
    if not -90 <= dec <= 90:
        raise click.BadParameter(f"must lie in [-90, 90], got {dec}", param_hint="-d/--dec")
    if psf is not None:
        from orchestrator.dia.pipeline.psf import parse_psf_option

        try:
            kind, value = parse_psf_option(psf)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--psf") from None
        if kind == "file" and not Path(str(value)).is_file():
            raise click.BadParameter(f"no such PSF file: {value}", param_hint="--psf")
    if 0 < cutout_px < 2 * (kernel_half_width + 12) + 16:
        raise click.BadParameter(
            f"must be 0 or at least {2 * (kernel_half_width + 12) + 16} pixels for "
            f"--kernel-half-width {kernel_half_width}",
            param_hint="--cutout",
        )
    if backend == "gpu":
        from orchestrator.dia import DiaBackendError, get_backend

        try:
            get_backend("gpu")
        except DiaBackendError as exc:
            raise click.BadParameter(str(exc), param_hint="--backend") from None


def check_also(oid: str, also: tuple[tuple[str, float, float], ...]) -> None:
    """``--also`` objects: ids that name folders, each once, declinations in range."""
    seen = {oid}
    for other, _, dec in also:
        if not other or "/" in other or other in (".", ".."):
            raise click.BadParameter(f"{other!r} cannot name a folder", param_hint="--also")
        if other in seen:
            raise click.BadParameter(f"object {other!r} is named twice", param_hint="--also")
        seen.add(other)
        if not -90 <= dec <= 90:
            raise click.BadParameter(
                f"{other}: Dec must lie in [-90, 90], got {dec}", param_hint="--also"
            )
