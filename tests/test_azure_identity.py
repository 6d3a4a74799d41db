"""Every Azure call uses Azure ML's credential order: on-behalf-of, the compute's named identity, else
the default chain (mldesigner's and Azure ML's own order; DefaultAzureCredential alone would ignore
DEFAULT_IDENTITY_CLIENT_ID)."""

from __future__ import annotations

import pytest

from mnist_mlops import azure_identity

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
