"""register: blessed model -> verified registry version with lineage. `register` is the component."""

from mnist_mlops.components.register.component import register

__all__ = ["register"]
