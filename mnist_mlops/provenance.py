"""Where an artifact came from: the code version and a hash of the Python environment that made it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

from mnist_mlops import __version__

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def utc_iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, the one timestamp form every artifact uses."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


CODE_VERSION_ENV = "MNIST_MLOPS_CODE_VERSION"
"""The commit a job's code came from, stamped where no git checkout travels: on each Azure ML node
(`pipelines/aml.py: training_job`) and in each Kubeflow job image (`containers.build_job_image`)."""


def code_version() -> str:
    """The stamped commit of a job, else the git commit of a source checkout (`+dirty` with uncommitted
    changes), else the package version."""
    return os.environ.get(CODE_VERSION_ENV) or _checkout_version()


@cache
def _checkout_version() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"mnist-mlops=={__version__}"
    return commit + ("+dirty" if dirty else "")


@cache
def environment_hash() -> str:
    """sha256 of the sorted `name==version` list of installed distributions."""
    packages = sorted(
        f"{(dist.metadata['Name'] or '').lower()}=={dist.version}" for dist in metadata.distributions()
    )
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()
