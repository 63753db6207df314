"""Executors start, follow and cancel runs: ``base`` (the protocol), ``local``, ``shim``.

Deliberately empty of imports: ``python -m orchestrator.executors.shim`` imports this package
first, and the shim must start without loading the store, pydantic or anything heavy.
"""
