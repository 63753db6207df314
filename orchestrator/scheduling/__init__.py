"""Scheduling: the only package that imports APScheduler."""
