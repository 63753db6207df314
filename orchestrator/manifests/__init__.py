"""Manifests: the Pydantic models (models.py), YAML loading with positions (loader.py), and
the directory watcher (watch.py)."""
