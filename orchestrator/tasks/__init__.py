"""What each job kind runs: a kind turns its manifest into an argv, an environment and a
working directory (``orchestrator.tasks.base.build_invocation``); the executor runs that,
whatever the kind. Kinds implemented in Python run as child processes
(``orchestrator.tasks.python_task``); their manifest models live in ``<kind>/spec.py`` and
import nothing heavier than the manifest models. Each kind is one line in
:mod:`orchestrator.kinds`."""
