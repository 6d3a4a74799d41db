"""deploy: registry version -> validated, serving production model. `deploy` is the component."""

from mnist_mlops.components.deploy.component import deploy

__all__ = ["deploy"]
