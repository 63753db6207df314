"""The per-process cache of prepared exposures: reuse, and bounds by count and by size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.dia.io import ExposureRow
from orchestrator.dia.pipeline import pair
from orchestrator.dia.pipeline.config import PipelineConfig, Prepared
from orchestrator.dia.pipeline.psf import PsfModel

CONFIG = PipelineConfig(oid="x", ra=0.0, dec=0.0, band="R062", outdir=Path("/tmp"))


def _row(i: int) -> ExposureRow:
    return ExposureRow(Path(f"/data/img{i}.fits"), i, 1, 60000.0 + i, "R062", None, f"l:{i}")


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """prepare_exposure replaced by one that makes a 1 MB (data + variance) exposure per call
    and records which row it prepared."""
    calls: list[int] = []

    def fake(row: ExposureRow, config: PipelineConfig, half: int, grow: float) -> Prepared:
        calls.append(row.pointing)
        data = np.zeros((250, 250))  # 0.5 MB
        psf = PsfModel.gaussian(1.5, half_px=3)
        return Prepared(
            row, data, data.copy(), np.zeros(data.shape, bool), None, (0, 0), 0.0, 0.0, 26.0, psf
        )

    monkeypatch.setattr(pair, "prepare_exposure", fake)
    monkeypatch.setattr(pair, "_cache", type(pair._cache)())
    return calls


def test_a_prepared_exposure_is_reused(made: list[int]) -> None:
    """Science-major order: each template is prepared once for many science epochs."""
    for s in range(3):
        pair.prepare(_row(100 + s), CONFIG, 0)
        for t in range(2):
            pair.prepare(_row(t), CONFIG, 0)
    assert made == [100, 0, 1, 101, 102]


def test_the_cache_is_bounded_by_count(made: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pair, "CACHE_ENTRIES", 3)
    for i in range(5):
        pair.prepare(_row(i), CONFIG, 0)
    pair.prepare(_row(4), CONFIG, 0)
    pair.prepare(_row(0), CONFIG, 0)  # evicted: prepared again
    assert made == [0, 1, 2, 3, 4, 0]
    assert len(pair._cache) == 3


def test_the_cache_is_bounded_by_size_and_keeps_the_newest(
    made: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole frames are large: the least recently used go first, but the exposure just
    prepared stays even when it alone exceeds the budget."""
    monkeypatch.setattr(pair, "CACHE_BYTES", 2_500_000)  # two 1.06 MB exposures fit
    pair.prepare(_row(0), CONFIG, 0)
    pair.prepare(_row(1), CONFIG, 0)
    pair.prepare(_row(0), CONFIG, 0)  # 0 is now the most recently used
    pair.prepare(_row(2), CONFIG, 0)  # evicts 1
    assert [k[0].pointing for k in pair._cache] == [0, 2]
    monkeypatch.setattr(pair, "CACHE_BYTES", 1)
    pair.prepare(_row(3), CONFIG, 0)
    assert [k[0].pointing for k in pair._cache] == [3]
