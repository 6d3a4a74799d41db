"""The Azure credential (and workspace client) every Azure call of the project uses, in Azure ML's order.

Inside an Azure ML job: on-behalf-of the submitting user when the job runs with the user's identity
(`AZUREML_OBO_ENABLED`), else the compute's managed identity named by `DEFAULT_IDENTITY_CLIENT_ID`
(a user-assigned identity, as least privilege asks for; `DefaultAzureCredential` would ignore that
variable and pick the wrong identity or none). Anywhere else: `DefaultAzureCredential` (CLI sign-in,
environment variables, workload identity in CI).
"""

from __future__ import annotations

import os
from typing import Any

OBO_ENABLED = "AZUREML_OBO_ENABLED"
IDENTITY_CLIENT_ID = "DEFAULT_IDENTITY_CLIENT_ID"
WORKSPACE_ENVIRONMENT = {
    "subscription_id": "AZUREML_ARM_SUBSCRIPTION",
    "resource_group": "AZUREML_ARM_RESOURCEGROUP",
    "workspace": "AZUREML_ARM_WORKSPACE_NAME",
}
"""What Azure ML sets in every job: a step that calls the workspace calls its own by default."""


def credential_kind(environ: dict[str, str] | None = None) -> str:
    """Which credential `credential()` builds here: "on_behalf_of", "managed_identity" or "default"."""
    environ = os.environ if environ is None else environ
    if environ.get(OBO_ENABLED, "").lower() in ("1", "true"):
        return "on_behalf_of"
    if environ.get(IDENTITY_CLIENT_ID):
        return "managed_identity"
    return "default"


def credential() -> Any:
    """The token credential for this process (see the module docstring)."""
    kind = credential_kind()
    if kind == "on_behalf_of":
        from azure.ai.ml.identity import AzureMLOnBehalfOfCredential

        return AzureMLOnBehalfOfCredential()
    if kind == "managed_identity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=os.environ[IDENTITY_CLIENT_ID])
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def workspace_client(
    subscription_id: str | None = None, resource_group: str | None = None, workspace: str | None = None
) -> Any:
    """An `azure.ai.ml.MLClient` for the workspace (given, else the running job's) with `credential()`."""
    from mnist_mlops.errors import UserInputError

    given = {"subscription_id": subscription_id, "resource_group": resource_group, "workspace": workspace}
    values = {name: value or os.environ.get(WORKSPACE_ENVIRONMENT[name]) for name, value in given.items()}
    missing = [name for name, value in values.items() if not (value and value.strip())]
    if missing:
        raise UserInputError(f"Azure ML workspace not fully specified: missing {', '.join(missing)}")
    from azure.ai.ml import MLClient

    return MLClient(
        credential=credential(),
        subscription_id=values["subscription_id"].strip(),
        resource_group_name=values["resource_group"].strip(),
        workspace_name=values["workspace"].strip(),
    )
