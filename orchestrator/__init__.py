"""orchestrator: a manifest-driven daemon for unattended HPC maintenance and pipelines."""

__version__ = "0.1.0"
