"""ingest's dataset registered as an Azure ML data asset versioned by its content, through a real
`azure.ai.ml.MLClient` whose Resource Manager calls reach a loopback stand-in (tests/azure_standin.py)
the way the SDK reaches a sovereign cloud (`ARM_CLOUD_METADATA_URL`), with the job's user-assigned
identity from the compute's token endpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, self_signed_certificate
from mnist_mlops import contracts, data_assets
from mnist_mlops.data_assets import CONTENT_TAG, VERSION_DIGITS, asset_version, register_dataset
from mnist_mlops.errors import UserInputError
from tests import azure_standin
from tests.datasets import small_splits, write_png_tree

WORKSPACE = {
    "AZUREML_ARM_SUBSCRIPTION": "00000000-0000-0000-0000-000000000000",
    "AZUREML_ARM_RESOURCEGROUP": "rg",
    "AZUREML_ARM_WORKSPACE_NAME": "ws",
}


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in, and this process set up as an Azure ML job's process that reaches it."""
    cert, key = self_signed_certificate(tmp_path)
    server, handler = azure_standin.serve(str(cert), str(key))
    # the SDK would record the cloud it finds through the metadata URL in this variable, for good: name it
    # here instead, so that it is undone after the test
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "RehearsalCloud")
    for name, value in {
        **azure_standin.job_environment(server.server_port, str(cert)),
        **WORKSPACE,
        "AZUREML_RUN_ID": "ingest_job_1",
    }.items():
        monkeypatch.setenv(name, value)
    yield handler
    server.shutdown()


def _manifest(content: str) -> dict:
    return {
        "dataset_version": content,
        "source_uri": "azureblob://mnist/v1",
        "source_format": "mnist_png",
        "fetched_at": "2026-12-06T00:00:00Z",
        "splits": {"training": {"count": 60}, "testing": {"count": 30}},
    }


def test_the_dataset_is_registered_once_per_content_with_its_hash(standin):
    content = "ab" * 32
    reference = register_dataset("mnist-mlops-dataset", _manifest(content), "dataset")

    version = content[:VERSION_DIGITS]
    assert reference == f"azureml:mnist-mlops-dataset:{version}"
    properties = standin.assets[("mnist-mlops-dataset", version)]["properties"]
    assert properties["dataUri"] == "azureml://jobs/ingest_job_1/outputs/dataset"
    assert properties["dataType"] == "uri_folder"
    assert properties["tags"][CONTENT_TAG] == content
    assert properties["tags"]["producer_job"] == "ingest_job_1"
    assert properties["tags"]["training_count"] == "60"
    calls = [(r["method"], r["path"]) for r in standin.requests if "/data/" in r["path"]]
    assert [method for method, _ in calls] == ["GET", "PUT"]
    assert all(r["authorized"] for r in standin.requests if "/data/" in r["path"])
    tokens = [r for r in standin.requests if r["path"] == "/msi/token"]
    assert tokens and {r["query"]["clientid"] for r in tokens} == {azure_standin.IDENTITY}

    # a rerun on the same content, from another job: found, nothing registered
    standin.requests.clear()
    assert register_dataset("mnist-mlops-dataset", _manifest(content), "dataset") == reference
    assert [r["method"] for r in standin.requests if "/data/" in r["path"]] == ["GET"]


def test_other_content_under_the_same_version_is_refused(standin):
    first = "cd" * 32
    register_dataset("mnist-mlops-dataset", _manifest(first), "dataset")
    clash = first[:VERSION_DIGITS] + "0" * (64 - VERSION_DIGITS)
    with pytest.raises(UserInputError, match="holds other content"):
        register_dataset("mnist-mlops-dataset", _manifest(clash), "dataset")


def test_a_concurrent_registration_of_the_same_content_is_accepted(standin, monkeypatch):
    """Two jobs on the same data: both find no version, the other one registers first, ours gets 409."""
    content = "12" * 32
    register_dataset("mnist-mlops-dataset", _manifest(content), "dataset")  # the other job's
    registered, looked = data_assets._registered, []

    def not_yet_the_first_time(*arguments):
        looked.append(arguments)
        return len(looked) > 1 and registered(*arguments)

    monkeypatch.setattr(data_assets, "_registered", not_yet_the_first_time)
    monkeypatch.setenv("AZUREML_RUN_ID", "ingest_job_2")
    standin.requests.clear()

    assert register_dataset("mnist-mlops-dataset", _manifest(content), "dataset").endswith(content[:16])
    assert [r["method"] for r in standin.requests if "/data/" in r["path"]] == ["PUT", "GET"]  # 409, found
    properties = standin.assets[("mnist-mlops-dataset", content[:VERSION_DIGITS])]["properties"]
    assert properties["dataUri"] == "azureml://jobs/ingest_job_1/outputs/dataset"  # the first one stands


def test_a_refusal_by_azure_is_one_line_naming_the_asset(standin, monkeypatch):
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", "99999999-0000-0000-0000-000000000000")  # not ours
    with pytest.raises(
        UserInputError, match=r"registering data asset azureml:mnist-mlops-dataset:3434"
    ) as error:
        register_dataset("mnist-mlops-dataset", _manifest("34" * 32), "dataset")
    assert "\n" not in str(error.value)
    assert standin.assets == {}


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "x" * 256, "semi;colon"])
def test_a_bad_asset_name_is_refused_before_any_call(name, standin):
    with pytest.raises(UserInputError, match="data asset name"):
        register_dataset(name, _manifest("ef" * 32), "dataset")
    assert standin.requests == []


def test_outside_an_azure_ml_job_registration_is_refused(monkeypatch):
    monkeypatch.delenv("AZUREML_RUN_ID", raising=False)
    with pytest.raises(UserInputError, match="AZUREML_RUN_ID"):
        register_dataset("mnist-mlops-dataset", _manifest("ef" * 32), "dataset")


def test_the_version_is_a_prefix_of_the_content_hash():
    assert asset_version("0123456789abcdef" + "f" * 48) == "0123456789abcdef"


def _ingest_in_a_job(source: Path, outputs: Path) -> subprocess.CompletedProcess:
    """The ingest spec's command under mldesigner, as Azure ML runs it, with `asset_name` bound."""
    command = [
        *(str(Path(sys.executable).parent / "mldesigner"), "execute"),
        *("--source", "components/ingest/component.py", "--name", "mnist_mlops_ingest"),
        *("--inputs", f"source_uri={source}", "asset_name=mnist-mlops-dataset"),
        *("--outputs", f"dataset={outputs / 'dataset'}", f"data_report={outputs / 'data_report.json'}"),
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.slow  # the component in its own process beside a server (the stand-in)
def test_the_ingest_component_registers_its_output_in_a_job(standin, tmp_path):
    source = write_png_tree(tmp_path / "src", small_splits())
    result = _ingest_in_a_job(source, tmp_path / "outputs")

    assert result.returncode == 0, result.stderr[-3000:]
    manifest = contracts.read_json(tmp_path / "outputs" / "dataset" / "manifest.json", "dataset_manifest")
    version = asset_version(manifest["dataset_version"])
    assert f"dataset: registered azureml:mnist-mlops-dataset:{version}" in result.stdout
    tags = standin.assets[("mnist-mlops-dataset", version)]["properties"]["tags"]
    assert tags[CONTENT_TAG] == manifest["dataset_version"]


@pytest.mark.slow  # the component in its own process beside a server (the stand-in)
def test_the_ingest_component_refuses_an_asset_name_outside_a_job_before_reading(tmp_path, monkeypatch):
    monkeypatch.delenv("AZUREML_RUN_ID", raising=False)
    result = _ingest_in_a_job(tmp_path / "does-not-exist", tmp_path / "outputs")

    assert result.returncode == 2
    assert "needs an Azure ML job" in result.stderr and "does-not-exist" not in result.stderr
    assert [path for path in (tmp_path / "outputs").rglob("*") if path.is_file()] == []


@pytest.mark.slow  # the component in its own process beside a server (the stand-in)
def test_a_refused_registration_leaves_no_dataset_behind(standin, tmp_path, monkeypatch):
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", "99999999-0000-0000-0000-000000000000")  # not ours
    result = _ingest_in_a_job(write_png_tree(tmp_path / "src", small_splits()), tmp_path / "outputs")

    assert result.returncode == 2, result.stderr[-3000:]
    assert "registering data asset azureml:mnist-mlops-dataset:" in result.stderr
    assert [path for path in (tmp_path / "outputs").rglob("*") if path.is_file()] == []
