"""kind: AliEnToken — keep a JAliEn token valid and distributed. The manifest model is in
``spec``; the task runs as ``python -m orchestrator.tasks.alien_token``."""
