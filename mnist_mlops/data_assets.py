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
    content (or find it registered already); returns `azureml:<name>:<version>`."""
    from azure.ai.ml.entities import Data
    from azure.core.exceptions import ResourceNotFoundError

    from mnist_mlops.azure_identity import workspace_client
    from mnist_mlops.provenance import code_version

    check_registrable(name)
    content = manifest["dataset_version"]
    version = asset_version(content)
    reference = f"azureml:{name}:{version}"
    client = client or workspace_client()
    try:
        existing = client.data.get(name=name, version=version)
    except ResourceNotFoundError:
        existing = None
    if existing is not None:
        if (existing.tags or {}).get(CONTENT_TAG) != content:
            raise UserInputError(
                f"data asset {reference} exists but holds other content "
                f"({CONTENT_TAG}={(existing.tags or {}).get(CONTENT_TAG)!r}, this dataset: {content})"
            )
        print(f"dataset: {reference} already holds this content; nothing registered", flush=True)
        return reference
    counts = {f"{split}_count": str(entry["count"]) for split, entry in manifest["splits"].items()}
    client.data.create_or_update(
        Data(
            name=name,
            version=version,
            type="uri_folder",
            path=f"azureml://jobs/{os.environ['AZUREML_RUN_ID']}/outputs/{output}",
            description=f"Validated dataset from {manifest['source_uri']}; manifest.json inside lists it.",
            tags={
                CONTENT_TAG: content,
                "source_format": manifest["source_format"],
                "fetched_at": manifest["fetched_at"],
                "producer_job": os.environ["AZUREML_RUN_ID"],
                "code_version": code_version(),
                **counts,
            },
        )
    )
    print(f"dataset: registered {reference}", flush=True)
    return reference
