"""Exposure lists in phrosty's format."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.dia.io import ListFormatError, read_list

LIST = """\
# templates
path pointing sca mjd band psf
images/a.fits 10 3 60000.5 R062 psf/a_psf.fits
images/b.fits 11 4 60001.5 H158 -
/abs/c.fits 12 5 60002.5 r062 -
"""


def test_band_filter_is_case_insensitive_and_skips_other_bands(tmp_path: Path) -> None:
    """Rows of other bands are skipped; the band matches without regard to case."""
    (tmp_path / "t.txt").write_text(LIST)
    rows = read_list(tmp_path / "t.txt", "R062")
    assert [r.pointing for r in rows] == [10, 12]
    assert rows[0].sca == 3
    assert rows[0].mjd == 60000.5


def test_relative_paths_start_at_the_list_folder_or_base_path(tmp_path: Path) -> None:
    """Relative paths start at the list's folder, or --base-path when given; absolute ones stay."""
    (tmp_path / "t.txt").write_text(LIST)
    rows = read_list(tmp_path / "t.txt", "R062")
    assert rows[0].path == tmp_path.resolve() / "images/a.fits"
    assert rows[1].path == Path("/abs/c.fits")
    based = read_list(tmp_path / "t.txt", "R062", Path("/sims"))
    assert based[0].path == Path("/sims/images/a.fits")


def test_psf_column_is_optional_and_dash_means_none(tmp_path: Path) -> None:
    """The psf column resolves like the image path; '-' means no PSF; without the column, none."""
    (tmp_path / "t.txt").write_text(LIST)
    rows = read_list(tmp_path / "t.txt")
    assert rows[0].psf_path == tmp_path.resolve() / "psf/a_psf.fits"
    assert rows[1].psf_path is None
    (tmp_path / "u.txt").write_text("mjd band path sca pointing\n60000 R062 x.fits 1 2\n")
    (row,) = read_list(tmp_path / "u.txt")
    assert row.psf_path is None
    assert row.pointing == 2
    assert row.sca == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path pointing mjd band\nx.fits 1 2 R062\n", "missing sca"),
        ("path pointing sca mjd band\nx.fits 1 2 R062\n", ":2: expected 5 columns"),
        ("path pointing sca mjd band\nx.fits one 2 3 R062\n", ":2: column pointing"),
        ("", "empty list"),
    ],
)
def test_malformed_lists_name_the_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    """A malformed list raises ListFormatError naming the file, line and column."""
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(ListFormatError, match=message):
        read_list(tmp_path / "t.txt", "R062")
