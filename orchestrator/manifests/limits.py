"""The documented bounds on a manifest, checked before anything is built from it.

A manifest is a few hundred bytes to a few kilobytes. The bounds below are far above that and
far below what would hurt the daemon (issue 8):

- ``MAX_MANIFEST_BYTES`` (1 MiB): a 50 MB manifest blocked the daemon's main loop for 61 s and
  took 3.6 GB. Checked on the file's size and again on the bytes read, before parsing.
- ``MAX_DEPTH`` (100 levels): libyaml's composer recurses on the C stack and segfaults near
  50,000 levels, taking the daemon with it.
- ``MAX_NODES`` (100,000 values) and ``MAX_SCALAR_CHARS`` (4 MiB of text), counted with
  aliases expanded: a 145 KB file of nested aliases ("billion laughs") is a few thousand nodes
  as YAML but a 1.3 GB argv once built. PyYAML builds a shared object per alias, and Pydantic
  then copies each use, so the expansion happens in validation, not in the parser.

The check is one pass over libyaml's event stream, which is flat (so it cannot recurse) and
streamed (so it holds no tree): each anchored node's expanded size is recorded once when the
node ends (the memo), an alias adds its anchor's size, and the alias that takes the document
over a bound is the error's position.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import yaml

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 100_000
MAX_SCALAR_CHARS = 4 * 1024 * 1024


class LimitExceededError(yaml.MarkedYAMLError):
    """The document crosses one of the bounds; ``problem_mark`` is where it does."""


def _raise_at(mark: Any, problem: str) -> None:
    raise LimitExceededError(problem=problem, problem_mark=mark)


def check_yaml_limits(text: str, loader: Any) -> None:
    """Raise LimitExceededError at the first event that takes ``text`` over MAX_DEPTH,
    MAX_NODES or MAX_SCALAR_CHARS (aliases counted expanded); other YAML errors are left for
    the composer, which words them better. ``loader`` is the Loader class to parse with."""
    count = _Sizes()
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            size = count.alias(event)
        elif isinstance(event, yaml.ScalarEvent):
            size = count.scalar(event)
        elif isinstance(event, yaml.CollectionStartEvent):
            count.start(event)
            size = None
        elif isinstance(event, yaml.CollectionEndEvent):
            size = count.end()
        else:
            size = None
        if size is not None and count.open_sizes:
            count.open_sizes[-1][0] += size[0]
            count.open_sizes[-1][1] += size[1]


class _Sizes:
    """The running counts of one document. Per open collection: [expanded nodes, expanded
    scalar characters] inside it so far, and its anchor (None without one); a collection's
    sums go to its parent when it ends. Each event method returns what the event adds to its
    parent (None: nothing)."""

    def __init__(self) -> None:
        self.open_sizes: list[list[int]] = []
        self.open_anchors: list[str | None] = []
        self.still_open: Counter[str] = Counter()
        self.anchor_sizes: dict[str, tuple[int, int]] = {}
        self.total_nodes = self.total_chars = 0

    def add(self, nodes: int, chars: int, mark: Any, what: str) -> None:
        """Count a value (a scalar, an alias's expansion, a collection's own node) in the
        document's totals; the open collections' sums are kept by the caller."""
        self.total_nodes += nodes
        self.total_chars += chars
        if self.total_nodes > MAX_NODES:
            _raise_at(
                mark,
                f"{what} takes the document over {MAX_NODES:,} values (aliases counted "
                "expanded, as they are when the manifest is built); a manifest needs a few "
                "hundred",
            )
        if self.total_chars > MAX_SCALAR_CHARS:
            _raise_at(
                mark,
                f"{what} takes the document over {MAX_SCALAR_CHARS // (1024 * 1024)} MiB of "
                "text (aliases counted expanded, as they are when the manifest is built)",
            )

    def alias(self, event: Any) -> tuple[int, int] | None:
        name = str(event.anchor)
        if self.still_open[name]:
            _raise_at(
                event.start_mark,
                f"alias *{name} is inside the node it names (a recursive structure); "
                "a manifest cannot hold one",
            )
        size = self.anchor_sizes.get(name)  # None: undefined, the composer's error to report
        if size is not None:
            self.add(*size, event.start_mark, f"alias *{name}")
        return size

    def scalar(self, event: Any) -> tuple[int, int]:
        size = (1, len(event.value))
        if event.anchor is not None:
            self.anchor_sizes[event.anchor] = size
        self.add(*size, event.start_mark, "this value")
        return size

    def start(self, event: Any) -> None:
        if len(self.open_sizes) >= MAX_DEPTH:
            _raise_at(
                event.start_mark,
                f"nested more than {MAX_DEPTH} levels deep; a manifest needs only a few",
            )
        self.add(1, 0, event.start_mark, "this value")
        self.open_sizes.append([1, 0])
        self.open_anchors.append(event.anchor)
        if event.anchor is not None:
            self.still_open[event.anchor] += 1

    def end(self) -> tuple[int, int]:
        nodes, chars = self.open_sizes.pop()
        anchor = self.open_anchors.pop()
        if anchor is not None:
            self.still_open[anchor] -= 1
            self.anchor_sizes[anchor] = (nodes, chars)
        return nodes, chars  # counted in the totals already, at its values
