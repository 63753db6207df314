"""What one AliEnToken run found and did (the task result and exit status come from it), and
its progress lines on the run's log."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from orchestrator.tasks.alien_token.certificate import TokenState


@dataclass
class Report:
    """What a run found and did; becomes the task result and the exit status."""

    token: TokenState | None = None
    renewed: bool = False
    renewal_error: str = ""
    needs_passphrase: bool = False
    directories: dict[str, dict[str, Any]] = field(default_factory=dict)
    env_file: str = ""
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    hosts_required: int = 0
    failures: list[str] = field(default_factory=list)  # full messages, with what to do
    headlines: list[str] = field(default_factory=list)  # the same, short, for the summary
    warning: str = ""

    def fail(self, headline: str, detail: str = "", first: bool = False) -> None:
        message = f"{headline}{detail}"
        if first:
            self.headlines.insert(0, headline)
            self.failures.insert(0, message)
        else:
            self.headlines.append(headline)
            self.failures.append(message)


class Console:
    """Progress lines on stdout (the run's log); a rewritten status line on a TTY."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._line_open = False

    def say(self, text: str) -> None:
        self._end_line()
        print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            self._line_open = True

    def _end_line(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
