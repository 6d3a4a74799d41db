"""ingest: source -> versioned, validated dataset. `ingest` is the mldesigner component."""

from mnist_mlops.components.ingest.component import ingest

__all__ = ["ingest"]
