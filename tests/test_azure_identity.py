"""Every Azure call uses Azure ML's credential order: on-behalf-of, the compute's named identity, else
the default chain (mldesigner's and Azure ML's own order; DefaultAzureCredential alone would ignore
DEFAULT_IDENTITY_CLIENT_ID)."""

from __future__ import annotations

import pytest

from mnist_mlops import azure_identity
from mnist_mlops.errors import UserInputError

CLIENT_ID = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("environ", "kind"),
    [
        ({}, "default"),
        ({"DEFAULT_IDENTITY_CLIENT_ID": CLIENT_ID}, "managed_identity"),
        ({"AZUREML_OBO_ENABLED": "True", "DEFAULT_IDENTITY_CLIENT_ID": CLIENT_ID}, "on_behalf_of"),
        ({"AZUREML_OBO_ENABLED": "true"}, "on_behalf_of"),
        ({"AZUREML_OBO_ENABLED": "False", "DEFAULT_IDENTITY_CLIENT_ID": CLIENT_ID}, "managed_identity"),
        ({"DEFAULT_IDENTITY_CLIENT_ID": ""}, "default"),
    ],
)
def test_the_credential_order(environ, kind):
    assert azure_identity.credential_kind(environ) == kind


def test_the_managed_identity_is_the_one_azure_ml_names(monkeypatch):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    monkeypatch.delenv("AZUREML_OBO_ENABLED", raising=False)
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", CLIENT_ID)
    chosen = azure_identity.credential()
    assert isinstance(chosen, ManagedIdentityCredential)
    # which identity it asks the compute for is checked end to end in ingest's Blob test
    monkeypatch.delenv("DEFAULT_IDENTITY_CLIENT_ID")
    assert isinstance(azure_identity.credential(), DefaultAzureCredential)


def test_the_workspace_client_names_missing_settings() -> None:
    from azure.ai.ml import MLClient

    with pytest.raises(UserInputError, match="missing subscription_id, workspace"):
        azure_identity.workspace_client("", "rg", " ")
    client = azure_identity.workspace_client(
        "00000000-0000-0000-0000-000000000000", "rg", "ws"
    )  # no call yet
    assert isinstance(client, MLClient)
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "00000000-0000-0000-0000-000000000000",
        "rg",
        "ws",
    )


def test_inside_an_azure_ml_job_the_client_targets_the_jobs_own_workspace(monkeypatch) -> None:
    monkeypatch.setenv("AZUREML_ARM_SUBSCRIPTION", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZUREML_ARM_RESOURCEGROUP", "rg")
    monkeypatch.setenv("AZUREML_ARM_WORKSPACE_NAME", "ws")
    client = azure_identity.workspace_client()
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "00000000-0000-0000-0000-000000000000",
        "rg",
        "ws",
    )
