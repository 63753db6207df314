"""Fault-injection suite: each case injects one fault a user can meet (a locked or full store,
a hostile manifest, a squatted socket, a signal at any moment) into a real daemon or a real
component, and asserts that the daemon goes on and says what happened. Every test here carries
the ``faults`` marker, so ``pytest -m faults`` runs the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
