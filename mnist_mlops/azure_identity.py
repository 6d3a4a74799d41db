"""The Azure credential every Azure call of the project uses, in Azure ML's own order.

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
