"""The pipeline stages as mldesigner components, importable in notebooks and AML/KFP pipelines:

from mnist_mlops.components import ingest, preprocess

Every folder here with a component.py is one, found by being there (a component made by
`mnist-mlops new-component` too); each is its package's function of the same name.
"""

from importlib import import_module
from pathlib import Path

__all__ = sorted(path.parent.name for path in Path(__file__).parent.glob("*/component.py"))
globals().update({stage: getattr(import_module(f"{__name__}.{stage}"), stage) for stage in __all__})
