"""A dataset as a named Azure ML data asset whose version is its content.

Azure ML registers a named node output only after the step ends, with the next integer version and no
way to attach what the step computed, so the content hash could never be recorded on it. So the step
that knows the hash registers its own output from inside its job: the version is the first
`VERSION_DIGITS` hex digits of the content hash, the full hash is the `dataset_version` tag, and the
path is the job's named output (`azureml://jobs/<job>/outputs/<output>`, the reference Azure ML
documents for a job output, wherever its storage is). The same content always gets the same version: a
rerun on unchanged data finds it and registers nothing, and a later pipeline that takes
`azureml:<name>:<version>` knows exactly which data it reads. Outside an Azure ML job there is no job
output to point at, so asking for a data asset there is an error.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mnist_mlops.azure_identity import WORKSPACE_ENVIRONMENT
from mnist_mlops.errors import UserInputError

DATASET_ASSET = "mnist-mlops-dataset"
"""The data asset the training pipeline registers ingest's dataset as, unless told otherwise."""
VERSION_DIGITS = 16
CONTENT_TAG = "dataset_version"
JOB_ENVIRONMENT = ("AZUREML_RUN_ID", *WORKSPACE_ENVIRONMENT.values())
"""What Azure ML sets in every job: the job's name and its workspace."""
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def check_registrable(name: str) -> None:
    """Refuse, before any work, an asset name Azure ML would refuse or a process that is no Azure ML job."""
    if not _ASSET_NAME.fullmatch(name):
        raise UserInputError(
            f"data asset name {name!r}: use letters, digits, '-', '_' and '.' (a letter or digit first)"
        )
    missing = [variable for variable in JOB_ENVIRONMENT if not os.environ.get(variable)]
    if missing:
        raise UserInputError(
            f"registering data asset {name!r} needs an Azure ML job to register its output from "
            f"({', '.join(missing)} unset); leave the asset name unset elsewhere"
        )


def asset_version(dataset_version: str) -> str:
    return dataset_version[:VERSION_DIGITS]


def register_dataset(name: str, manifest: dict[str, Any], output: str, client: Any = None) -> str:
    """Register the job output `output` holding the dataset of `manifest` as `name`, versioned by its
    content (or find it registered already: by an earlier run, or by a concurrent one that got there
    first); returns `azureml:<name>:<version>`. A refusal by the service is one UserInputError line."""
    from azure.core.exceptions import AzureError, ResourceExistsError

    from mnist_mlops.azure_identity import workspace_client

    check_registrable(name)
    content = manifest["dataset_version"]
    reference = f"azureml:{name}:{asset_version(content)}"
    try:
        client = client or workspace_client()
        if _registered(client, name, content):
            print(f"dataset: {reference} already holds this content; nothing registered", flush=True)
            return reference
        try:
            client.data.create_or_update(_asset(name, manifest, output))
        except ResourceExistsError:
            if not _registered(client, name, content):
                raise
        print(f"dataset: registered {reference}", flush=True)
        return reference
    except AzureError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(f"registering data asset {reference} failed: {first_line}") from None


def _registered(client: Any, name: str, content: str) -> bool:
    """Whether the version for `content` exists; raises if it exists holding other content."""
    from azure.core.exceptions import ResourceNotFoundError

    version = asset_version(content)
    try:
        existing = client.data.get(name=name, version=version)
    except ResourceNotFoundError:
        return False
    found = (existing.tags or {}).get(CONTENT_TAG)
    if found != content:
        raise UserInputError(
            f"data asset azureml:{name}:{version} exists but holds other content "
            f"({CONTENT_TAG}={found!r}, this dataset: {content})"
        )
    return True


def _asset(name: str, manifest: dict[str, Any], output: str) -> Any:
    from azure.ai.ml.entities import Data

    from mnist_mlops.provenance import code_version

    job = os.environ["AZUREML_RUN_ID"]
    counts = {f"{split}_count": str(entry["count"]) for split, entry in manifest["splits"].items()}
    return Data(
        name=name,
        version=asset_version(manifest["dataset_version"]),
        type="uri_folder",
        path=f"azureml://jobs/{job}/outputs/{output}",
        description=f"Validated, content-hashed {manifest['source_format']} dataset written by job {job}.",
        tags={
            CONTENT_TAG: manifest["dataset_version"],
            "source_format": manifest["source_format"],
            "fetched_at": manifest["fetched_at"],
            "producer_job": job,
            "code_version": code_version(),
            **counts,
        },
    )
