"""Pipelines composed from the components."""
