"""kind: O2Sync — keep an ALICE O2Physics installation current (CVMFS daily tags, or a source
checkout rebuilt with aliBuild). The manifest model is in ``spec``; the task runs as
``python -m orchestrator.tasks.o2sync`` (see ``orchestrator.tasks.python_task``)."""
