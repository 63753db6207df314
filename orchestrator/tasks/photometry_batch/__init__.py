"""PhotometryBatch: many supernovae measured as one batch, results per object and per batch.

``spec`` (the manifest model: the daemon imports only this), ``objects`` (the object table),
``plan`` (tasks, checked and fingerprinted before any runs), ``execute`` (the local pool),
``collect`` (summary table and plots), ``task`` (one run, ``python -m`` this package).
"""
