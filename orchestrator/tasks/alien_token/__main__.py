"""``python -m orchestrator.tasks.alien_token``: one run of an AliEnToken job (see ``task``).

An internal error says so in the run's result and log: the token was then not checked to the
end (``python_task.main_of``)."""

from __future__ import annotations

import sys

from orchestrator.tasks.alien_token.spec import AliEnTokenManifest
from orchestrator.tasks.alien_token.task import EXIT_FAILED, EXIT_UNUSABLE, run
from orchestrator.tasks.python_task import main_of

if __name__ == "__main__":
    sys.exit(main_of(AliEnTokenManifest, run, "AliEnToken", EXIT_FAILED, EXIT_UNUSABLE))
