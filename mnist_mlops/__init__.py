"""mnist-mlops: typed, containerized MLOps components (ingest, preprocess, ...) for AML and Kubeflow.

The folders `components/`, `pipelines/` and `schemas/` are subpackages of `mnist_mlops`: an installed
wheel has them inside the package; a source tree (a checkout, or the code snapshot an Azure ML job runs
in, see `mnist_mlops.snapshot`) keeps them beside it, and the finder below maps them there.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"
SOURCE_TREE_SUBPACKAGES = ("components", "pipelines", "schemas")


class _SourceTreeSubpackages(importlib.abc.MetaPathFinder):
    """Finds `mnist_mlops.<folder>` for the source tree folders beside this package."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or name not in SOURCE_TREE_SUBPACKAGES:
            return None
        folder = self.root / name
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


_HERE = Path(__file__).resolve().parent
if not (_HERE / "components").is_dir() and (_HERE.parent / "components" / "__init__.py").is_file():
    sys.meta_path.insert(0, _SourceTreeSubpackages(_HERE.parent))  # before an editable install's mapping
