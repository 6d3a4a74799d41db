"""The components' shared runtime environments, generated from pyproject.toml.

Two Docker build contexts under `components/environments/` (as azureml-assets shares one environment
among many components): `data` for ingest and preprocess, `model` for the stages that need TensorFlow,
MLflow and the scoring server. A component names its environment in its decorator; its spec points at
the folder, which Azure ML uploads as it is and builds with no build args. So the Dockerfile's base is
fixed (no `ARG`) and must be one that runs in the cloud: Debian bookworm with Python 3.11, because the
pins need Python >= 3.11 and the Azure ML images ship 3.10. The image holds third-party packages only;
the project's code reaches a job as its code snapshot (`mnist_mlops.snapshot`), found through
`PYTHONPATH=.` from the snapshot the job runs in.

`mnist-mlops specs` writes each folder's `requirements.txt` and `Dockerfile` from pyproject.toml and
this module; `--check` (and the tests) fail on drift, so the pins are written once.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from mnist_mlops.ports import components_root
from mnist_mlops.snapshot import source_root

BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
"""Debian bookworm with CPython 3.11, the Docker official image; Azure ML builds environments on any
public image it can pull."""
EXTRAS = {"data": ("azure", "tracking"), "model": ("model",)}
"""Which optional dependency groups of pyproject.toml each environment adds to the base dependencies
(`azure` in the data environment: ingest registers its dataset as an Azure ML data asset)."""
GENERATED = "# Generated from pyproject.toml by `mnist-mlops specs`; do not edit by hand.\n"
_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+==[^\s;#]+)")

DOCKERFILE = """{header}# The `{name}` environment of the mnist-mlops components. Azure ML uploads this
# folder as it is and builds it with no build args, so the base is fixed. Only third-party pins go
# in: the project's code comes with each job's code snapshot, the working directory: PYTHONPATH=.
FROM {base_image}
COPY requirements.txt /opt/mnist-mlops/requirements.txt
RUN python3 -m venv /opt/mnist-mlops/venv \\
 && /opt/mnist-mlops/venv/bin/pip install --no-cache-dir -r /opt/mnist-mlops/requirements.txt \\
 && /opt/mnist-mlops/venv/bin/pip check \\
 && rm -rf /root/.cache
ENV PATH=/opt/mnist-mlops/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=.
"""


def environment_dir(name: str) -> Path:
    """The build context of environment `name`, in a checkout or an installed package."""
    return components_root() / "environments" / name


def pins(pyproject: dict, extras: tuple[str, ...]) -> list[str]:
    """The `name==version` pins of the base dependencies plus `extras`, in the order they are written."""
    project = pyproject["project"]
    lines = [
        *project["dependencies"],
        *(dep for extra in extras for dep in project["optional-dependencies"][extra]),
    ]
    found = []
    for line in lines:
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"pyproject.toml: {line!r} is not pinned with ==")
        found.append(match.group(1))
    return found


def render(name: str) -> dict[str, str]:
    """The generated files of environment `name`: file name -> text."""
    pyproject = tomllib.loads((source_root() / "pyproject.toml").read_text())
    requirements = GENERATED + "\n".join(pins(pyproject, EXTRAS[name])) + "\n"
    dockerfile = DOCKERFILE.format(header=GENERATED, name=name, base_image=BASE_IMAGE)
    return {"requirements.txt": requirements, "Dockerfile": dockerfile}
