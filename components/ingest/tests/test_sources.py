"""ingest from every source kind: local folder, .tar.gz, pinned http(s), Azure Blob (Azurite), IDX."""

from __future__ import annotations

import hashlib
import http.server
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import ClassVar

import jwt
import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.errors import UserInputError
from mnist_mlops.sources import SourceError, open_source
from tests.azure_standin import IDENTITY, JsonHandler
from tests.datasets import make_tarball, small_splits, write_idx, write_png_tree


def ingest_to(tmp_path: Path, source: str, **options) -> tuple[dict, dict, Path]:
    out = tmp_path / "out"
    manifest = run_ingest(source, out / "dataset", out / "data_report.json", **options)
    report = contracts.read_json(out / "data_report.json", "data_report")
    return manifest, report, out / "dataset"


def test_local_folder_gives_validated_versioned_dataset(tmp_path, png_dataset):
    manifest, report, dataset = ingest_to(tmp_path, str(png_dataset))
    assert manifest["source_kind"] == "local_folder" and manifest["source_format"] == "mnist_png"
    assert manifest["splits"]["training"]["count"] == 60 and manifest["splits"]["testing"]["count"] == 30
    assert manifest["splits"]["training"]["class_counts"] == [6] * 10
    contracts.read_json(dataset / "manifest.json", "dataset_manifest")
    images = np.load(dataset / "training" / "images.npy")
    expected, _ = small_splits()["training"]
    assert images.dtype == np.uint8 and images.shape == (60, 28, 28)
    assert {image.tobytes() for image in images} == {image.tobytes() for image in expected}
    assert report["dataset_version"] == manifest["dataset_version"]
    assert {check["name"] for check in report["checks"]} >= {
        "data_age",
        "train_test_leakage",
        "invalid_files",
    }


def test_version_depends_on_content_not_on_form(tmp_path, png_dataset):
    from_folder, _, _ = ingest_to(tmp_path / "a", str(png_dataset))
    tarball = make_tarball(png_dataset, tmp_path / "mnist.tar.gz")
    from_tarball, _, _ = ingest_to(tmp_path / "b", str(tarball))
    from_idx, _, _ = ingest_to(tmp_path / "c", str(write_idx(tmp_path / "idx", small_splits())))
    assert from_tarball["source_kind"] == "tarball" and from_idx["source_format"] == "idx"
    assert from_folder["dataset_version"] == from_tarball["dataset_version"] == from_idx["dataset_version"]
    changed = small_splits()
    changed["testing"][0][0, 0, 0] ^= 1
    from_changed, _, _ = ingest_to(tmp_path / "d", str(write_png_tree(tmp_path / "changed", changed)))
    assert from_changed["dataset_version"] != from_folder["dataset_version"]


def test_folder_holding_one_tarball_reads_the_tarball(tmp_path, png_dataset):
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    make_tarball(png_dataset, mounted / "mnist_png.tar.gz")
    manifest, _, _ = ingest_to(tmp_path, str(mounted))
    assert manifest["splits"]["testing"]["count"] == 30


def test_a_mounted_folder_port_reads_like_the_same_folder_given_as_uri(tmp_path, png_dataset):
    from_uri, _, _ = ingest_to(tmp_path / "uri", str(png_dataset))
    port = tmp_path / "port"
    from_port = run_ingest(None, port / "dataset", port / "data_report.json", source_data=png_dataset)
    assert from_port["dataset_version"] == from_uri["dataset_version"]
    assert from_port["source_kind"] == from_uri["source_kind"] == "local_folder"


@pytest.mark.parametrize("given", ["neither", "both"])
def test_exactly_one_source_port_is_taken_and_the_refusal_names_both(tmp_path, png_dataset, given):
    source = str(png_dataset) if given == "both" else None
    out = tmp_path / "out"
    with pytest.raises(UserInputError, match=rf"exactly one of source_data .* or source_uri .*, not {given}"):
        run_ingest(source, out / "dataset", out / "data_report.json", source_data=source)
    assert not out.exists()


def test_idx_made_from_the_shared_pngs_matches_them(tmp_path, shared_tarball):
    """IDX files built from real MNIST PNGs ingest to the same pixels and the same version."""
    subset = tmp_path / "subset"
    with tarfile.open(shared_tarball) as archive:
        wanted = {}
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and len(wanted.setdefault((parts[1], parts[2]), [])) < 3:
                wanted[(parts[1], parts[2])].append(member.name)
                (subset / member.name).parent.mkdir(parents=True, exist_ok=True)
                (subset / member.name).write_bytes(archive.extractfile(member).read())
    png_manifest, _, png_dataset = ingest_to(tmp_path / "png", str(subset))
    splits = {
        split: (np.load(png_dataset / split / "images.npy"), np.load(png_dataset / split / "labels.npy"))
        for split in ("training", "testing")
    }
    idx_manifest, _, _ = ingest_to(tmp_path / "idx", str(write_idx(tmp_path / "idx-files", splits)))
    assert png_manifest["splits"]["training"]["count"] == 30
    assert idx_manifest["dataset_version"] == png_manifest["dataset_version"]


def test_http_tarball_is_pinned_verified_and_cached(tmp_path, png_dataset, http_server, monkeypatch):
    monkeypatch.setenv("MNIST_MLOPS_CACHE", str(tmp_path / "cache"))
    base, root = http_server
    tarball = make_tarball(png_dataset, root / "mnist.tar.gz")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    url = f"{base}/mnist.tar.gz?token=secret"
    manifest, _, _ = ingest_to(tmp_path / "first", url, source_sha256=digest)
    assert manifest["source_kind"] == "http"
    assert "secret" not in manifest["source_uri"] and manifest["source_uri"].startswith("http://127.0.0.1")
    tarball.unlink()
    cached, _, _ = ingest_to(tmp_path / "second", url, source_sha256=digest)
    assert cached["dataset_version"] == manifest["dataset_version"]


def test_http_tarball_needs_a_matching_pin(tmp_path, png_dataset, http_server, monkeypatch):
    monkeypatch.setenv("MNIST_MLOPS_CACHE", str(tmp_path / "cache"))
    base, root = http_server
    make_tarball(png_dataset, root / "mnist.tar.gz")
    with pytest.raises(SourceError, match="needs its sha256 pin"):
        ingest_to(tmp_path / "a", f"{base}/mnist.tar.gz")
    with pytest.raises(SourceError, match="but the pin is"):
        ingest_to(tmp_path / "b", f"{base}/mnist.tar.gz", source_sha256="0" * 64)
    with pytest.raises(SourceError, match="download failed"):
        ingest_to(tmp_path / "c", f"{base}/missing.tar.gz", source_sha256="0" * 64)
    assert not (tmp_path / "b" / "out").exists()
    assert not list((tmp_path / "cache").rglob("*.tar.gz"))


@pytest.fixture
def blob_container(azurite):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite["connection_string"])
    name = f"mnist-{np.random.default_rng().integers(1 << 30)}"
    container = service.create_container(name)
    yield container
    container.delete_container()


def _sas_url(azurite, container_name: str, prefix: str) -> str:
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    token = generate_container_sas(
        azurite["account"],
        container_name,
        account_key=azurite["key"],
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    return f"{azurite['endpoint']}/{container_name}/{prefix}?{token}"


@pytest.mark.azurite
def test_azure_blob_tarball_by_sas_url(tmp_path, png_dataset, azurite, blob_container):
    tarball = make_tarball(png_dataset, tmp_path / "mnist.tar.gz")
    blob_container.upload_blob("drops/2026/mnist.tar.gz", tarball.read_bytes())
    url = _sas_url(azurite, blob_container.container_name, "drops/2026/mnist.tar.gz")
    manifest, report, _ = ingest_to(tmp_path, url)
    assert manifest["source_kind"] == "azure_blob" and "sig=" not in manifest["source_uri"]
    assert manifest["splits"]["training"]["count"] == 60
    age = next(check for check in report["checks"] if check["name"] == "data_age")
    assert age["outcome"] == "pass" and age["value"] < 1  # blob last-modified times, i.e. just uploaded


@pytest.mark.azurite
def test_azure_blob_png_tree_by_connection_string(
    tmp_path, png_dataset, azurite, blob_container, monkeypatch
):
    for path in sorted(png_dataset.rglob("*.png")):
        blob_container.upload_blob(f"v1/{path.relative_to(png_dataset).as_posix()}", path.read_bytes())
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite["connection_string"])
    manifest, _, _ = ingest_to(tmp_path, f"azureblob://{blob_container.container_name}/v1")
    assert manifest["splits"]["testing"]["count"] == 30


@pytest.mark.azurite
def test_azure_blob_errors_are_clear(tmp_path, azurite, blob_container, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    with pytest.raises(
        SourceError,
        match=r"AZURE_STORAGE_ACCOUNT_URL \(read with the job's identity\) or AZURE_STORAGE_CONNECTION",
    ):
        ingest_to(tmp_path, f"azureblob://{blob_container.container_name}/v1")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite["connection_string"])
    with pytest.raises(SourceError, match="no blobs found"):
        ingest_to(tmp_path, f"azureblob://{blob_container.container_name}/nothing-here")


def test_a_local_tarball_is_checked_against_its_pin(tmp_path, png_dataset):
    tarball = make_tarball(png_dataset, tmp_path / "mnist.tar.gz")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert ingest_to(tmp_path / "ok", str(tarball), source_sha256=digest)[0]["source_kind"] == "tarball"
    with pytest.raises(SourceError, match="does not match its sha256 pin"):
        ingest_to(tmp_path / "bad", str(tarball), source_sha256="0" * 64)


def test_missing_and_unsupported_sources(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        ingest_to(tmp_path, str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="unsupported scheme"):
        ingest_to(tmp_path, "ftp://example.org/mnist.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no image data found"):
        ingest_to(tmp_path, str(tmp_path / "empty"))
    not_a_tarball = tmp_path / "data.zip"
    not_a_tarball.write_bytes(b"PK")
    with pytest.raises(SourceError, match=r"\.tar\.gz"):
        ingest_to(tmp_path, str(not_a_tarball))
    assert not (tmp_path / "out").exists()


def test_named_mnist_source_downloads_each_pinned_file_with_mirror_fallback(
    tmp_path, http_server, monkeypatch
):
    from mnist_mlops.sources import MNIST_FILES, download_mnist

    monkeypatch.setenv("MNIST_MLOPS_CACHE", str(tmp_path / "cache"))
    base, root = http_server
    write_idx(root / "mnist", small_splits(train_per_class=4, test_per_class=2))
    pins = {name: hashlib.sha256((root / "mnist" / name).read_bytes()).hexdigest() for name in MNIST_FILES}
    folder = download_mnist((f"{base}/missing/", f"{base}/mnist/"), pins)
    assert sorted(path.name for path in folder.iterdir()) == sorted(MNIST_FILES)
    report = run_ingest(str(folder), tmp_path / "dataset", tmp_path / "report.json")
    assert report["splits"]["training"]["count"] == 40

    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    monkeypatch.setenv("MNIST_MLOPS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SourceError, match=r"every mirror failed.*but the pin is"):
        download_mnist((f"{base}/mnist/",), pins)


class _ComputeIdentityEndpoint(JsonHandler):
    """The token endpoint an Azure ML compute gives its jobs (MSI_ENDPOINT, MSI_SECRET): answers with a
    Microsoft Entra-shaped token for the requested resource and records which identity was asked for."""

    requests: ClassVar[list[dict[str, str]]] = []
    known = IDENTITY  # the one user-assigned identity of this compute

    def do_GET(self) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        self.requests.append(query | {"secret": self.headers.get("secret", "")})
        if query.get("clientid") != self.known:
            return self.answer(
                400, {"error": "invalid_request", "error_description": "no such identity on this compute"}
            )
        expires = int(time.time()) + 3600
        claims = {
            "aud": query["resource"].removesuffix("/.default"),
            "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
            "iat": int(time.time()) - 60,
            "nbf": int(time.time()) - 60,
            "exp": expires,
            "oid": query.get("clientid", ""),
        }
        token = jwt.encode(claims, "stand-in", "HS256")
        return self.answer(
            200,
            {
                "access_token": token,
                "expires_on": expires,
                "resource": query["resource"],
                "token_type": "Bearer",
            },
        )


@pytest.mark.azurite
def test_azure_blob_is_read_with_the_jobs_user_assigned_identity_and_no_secret(
    tmp_path, png_dataset, azurite_oauth, monkeypatch
):
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", azurite_oauth["ca_bundle"])
    service = BlobServiceClient.from_connection_string(azurite_oauth["connection_string"])
    container = service.create_container(f"mnist-{np.random.default_rng().integers(1 << 30)}")
    tarball = make_tarball(png_dataset, tmp_path / "mnist.tar.gz")
    container.upload_blob("v1/mnist.tar.gz", tarball.read_bytes())

    handler = type("Endpoint", (_ComputeIdentityEndpoint,), {"requests": []})
    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", azurite_oauth["endpoint"])
    monkeypatch.setenv("MSI_ENDPOINT", f"http://127.0.0.1:{endpoint.server_port}/msi/token")
    monkeypatch.setenv("MSI_SECRET", "compute-secret")
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", handler.known)
    try:
        manifest, _, _ = ingest_to(tmp_path, f"azureblob://{container.container_name}/v1")
        # the user-assigned identity Azure ML names, not whatever DefaultAzureCredential would find
        assert {request["clientid"] for request in handler.requests} == {handler.known}
        assert manifest["splits"]["training"]["count"] == 60
        assert manifest["source_uri"] == f"azureblob://{container.container_name}/v1"
    finally:
        endpoint.shutdown()


@pytest.mark.parametrize("job_variable", ["AZUREML_RUN_ID", "KFP_POD_NAME"])
def test_a_job_refuses_a_sas_url_which_its_definition_would_store(job_variable, monkeypatch):
    monkeypatch.setenv(job_variable, "run-1")
    url = "https://acct.blob.core.windows.net/drops/mnist.tar.gz?sv=2024-01-01&sp=rl&sig=c2VjcmV0"
    with pytest.raises(SourceError, match="azureblob://") as raised, open_source(url):
        pass
    assert "c2VjcmV0" not in str(raised.value)
