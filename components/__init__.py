"""The pipeline stages as mldesigner components, importable in notebooks and AML/KFP pipelines:

from mnist_mlops.components import ingest, preprocess

Every folder here with a component.py is one, found by being there (a component made by
`mnist-mlops new-component` too); each is its package's function of the same name. A stage is imported
when first asked for: a node process runs one component, and importing every component's decorated
function (mldesigner inspects the caller's stack for each) would cost it about a second.
"""

import sys
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = sorted(path.parent.name for path in Path(__file__).parent.glob("*/component.py"))


class _Stages(ModuleType):
    """This package, its stage names kept for the stages' functions: importing a stage's package (for
    its executor, say) would otherwise rebind the name to that package, as the import system does."""

    def __getattr__(self, stage: str) -> Any:
        if stage not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {stage!r}")
        function = getattr(import_module(f"{__name__}.{stage}"), stage)
        super().__setattr__(stage, function)
        return function

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *__all__})

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in __all__ and isinstance(value, ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Stages
