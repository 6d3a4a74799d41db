"""Package discovery that pyproject.toml cannot express: the source folders installed under another
name (`[tool.setuptools] package-dir`, components/ -> mnist_mlops.components) are searched for their
subpackages too, so a component made by `mnist-mlops new-component` is in the wheel with no entry to add.
Everything else is configured in pyproject.toml."""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

NOT_INSTALLED = ["tests", "*.tests", "*.tests.*"]


def packages() -> list[str]:
    """Every package under each `package-dir` entry, named under the package its folder installs as."""
    found = []
    here = Path(__file__).resolve().parent
    config = tomllib.loads((here / "pyproject.toml").read_text())
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        subpackages = find_packages(str(here / folder), exclude=NOT_INSTALLED)
        found += [package, *(f"{package}.{sub}" for sub in subpackages)]
    return found


setup(packages=packages())
