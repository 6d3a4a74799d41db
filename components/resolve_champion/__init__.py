"""resolve_champion: registry pointer -> champion model, or "none". `resolve_champion` is the component."""

from mnist_mlops.components.resolve_champion.component import resolve_champion

__all__ = ["resolve_champion"]
