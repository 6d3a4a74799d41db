"""Shared pytest fixtures: local HTTP server, Azurite blob emulator, small datasets, the shared MNIST."""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.server
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mnist_mlops.serving.server import free_port, stop_process
from tests.datasets import small_splits, write_png_tree

REPO = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MNIST_MLOPS_SHARED", REPO.parent / "shared"))
SHARED_TARBALL = SHARED / "data" / "mnist_png.tar.gz"
STAND_IN_BASE = "localhost/py311-base:bookworm"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(autouse=True, scope="session")
def no_freeze_in_the_test_process() -> None:
    """The runner freezes the heap once MLflow is imported (`collector.long_lived`), which suits a
    short-lived process; a test process runs many runners for an hour, so its heap is never frozen."""
    from mnist_mlops import collector

    collector._built.add("mlflow")


@pytest.fixture(autouse=True)
def no_tracking_uri_between_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mlflow.set_tracking_uri` also sets $MLFLOW_TRACKING_URI, so a test that calls it (register does)
    would make later in-process component calls log standalone runs into that test's store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate (and key) for 127.0.0.1, its own CA: for TLS stand-ins on loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class DeployedRun:
    """A finished `mnist-mlops run` that blessed, registered and deployed version 1 of `model`."""

    data: Path
    runs: Path
    registry: str
    run_dir: Path
    argv: tuple[str, ...]
    """The command's arguments after `mnist-mlops`: run it again for a cached rerun."""
    stdout: str
    stderr: str
    """What the command printed, run as a user runs it (its own process, not a terminal)."""
    model: str = "mnist-mlops"

    @property
    def record(self) -> dict:
        return json.loads((self.run_dir / "run.json").read_text())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The suite runs on two xdist workers (pyproject's addopts); the tests that build and run images
    share one podman store, its image tags and its container names, so they all go to one worker."""
    for item in items:
        if item.get_closest_marker("container"):
            item.add_marker(pytest.mark.xdist_group("containers"))


@pytest.fixture(scope="session")
def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> DeployedRun:
    """One small tracked pipeline run, ingest to a local deployment, shared by the tests that read a whole
    run (the console, MLflow tracking, lineage, the run report): each costs a minute. Tests may add runs (a
    cached rerun) and requests, never change what this run wrote."""
    from tests.models import LENIENT

    root = tmp_path_factory.mktemp("deployed-run")
    thresholds = root / "kpis.json"
    thresholds.write_text(json.dumps(LENIENT | {"min_accuracy": 0.3}))
    data = write_png_tree(root / "data", small_splits(train_per_class=12, test_per_class=4))
    registry = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    argv = ["run", "--data", str(data), "--runs-dir", str(root / "runs"), "--registry", registry]
    for setting in (
        f"evaluate.thresholds={thresholds}",
        "train.epochs=8",
        "train.batch_size=16",
        "deploy.canary_count=8",
        "deploy.max_canary_p99_ms=1000",  # a busy test machine is no latency test (deploy's own tests are)
    ):
        argv += ["--set", setting]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    command = Path(sys.executable).parent / "mnist-mlops"
    done = subprocess.run(
        [str(command), *argv], cwd=root, env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"the shared small pipeline run failed:\n{done.stdout}\n{done.stderr}"
    (run_dir,) = [folder for folder in (root / "runs").iterdir() if folder.name != ".cache"]
    return DeployedRun(data, root / "runs", registry, run_dir, tuple(argv), done.stdout, done.stderr)


@pytest.fixture
def png_dataset(tmp_path: Path) -> Path:
    """A small dataset in the mnist_png layout: returns the folder holding `mnist_png/`."""
    return write_png_tree(tmp_path / "source", small_splits())


@pytest.fixture
def shared_tarball() -> Path:
    if not SHARED_TARBALL.is_file():
        pytest.fail(f"the shared MNIST tarball is missing at {SHARED_TARBALL} (set MNIST_MLOPS_SHARED)")
    return SHARED_TARBALL


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a fresh folder: yields (base URL, folder)."""
    root = tmp_path / "http-root"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", root
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


OVERLAY_STORE = (
    "--storage-driver overlay --root /var/lib/mnist-mlops/containers --runroot /run/mnist-mlops/containers"
    " --runtime runc"
)
"""podman-here's settings with overlay storage, in a store of its own: vfs copies a whole image per layer
and per container (a model image build takes ~10 minutes), overlay shares them (~2)."""


@pytest.fixture(scope="session")
def podman_images() -> str:
    """Podman with this machine's settings and the stand-in for the environments' public base image:
    Debian bookworm with Python 3.11 from `../shared/containers/make-base-image`, tagged under the base's
    own name so the Dockerfiles build unchanged, with no build args, as on Azure ML. Returns its name.

    Overlay storage where the kernel has it (checked by running the base), else podman-here's vfs;
    `$MNIST_MLOPS_PODMAN` set beforehand wins."""
    from mnist_mlops.environments import BASE_IMAGE

    helper = SHARED / "containers"
    subprocess.run([str(helper / "make-base-image"), STAND_IN_BASE], check=True)
    os.environ.setdefault("CONTAINERS_CONF", str(helper / "podman.conf"))
    if "MNIST_MLOPS_PODMAN" not in os.environ:
        os.environ["MNIST_MLOPS_PODMAN"] = _overlay_podman(helper) or str(helper / "podman-here")
    podman = os.environ["MNIST_MLOPS_PODMAN"].split()
    subprocess.run([*podman, "tag", STAND_IN_BASE, BASE_IMAGE], check=True)
    return BASE_IMAGE


def _overlay_podman(helper: Path) -> str | None:
    """The overlay-storage podman command with the base image in its store, or None where it fails."""
    podman = ["podman", *OVERLAY_STORE.split()]
    if subprocess.run([*podman, "image", "exists", STAND_IN_BASE], check=False).returncode:
        with tempfile.TemporaryDirectory() as scratch:
            archive = f"{scratch}/base.tar"
            subprocess.run([str(helper / "podman-here"), "save", "-o", archive, STAND_IN_BASE], check=True)
            if subprocess.run([*podman, "load", "-i", archive], check=False, capture_output=True).returncode:
                return None
    probe = [*podman, "run", "--rm", "--network", "none", STAND_IN_BASE, "true"]
    return (
        " ".join(podman) if subprocess.run(probe, check=False, capture_output=True).returncode == 0 else None
    )


@pytest.fixture(scope="session")
def docker_socket(podman_images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Podman's Docker-compatible API on a Unix socket, over the same image store; yields DOCKER_HOST."""
    socket_path = tmp_path_factory.mktemp("podman-api") / "podman.sock"
    command = [*os.environ["MNIST_MLOPS_PODMAN"].split(), "system", "service", "--time=0"]
    with _service([*command, f"unix://{socket_path}"], socket_path.exists, "podman system service", 30):
        yield f"unix://{socket_path}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on loopback (SQLite backend, proxied artifacts); yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1"]  # each of the default 4 imports MLflow: a minute of CPU on two cores
    command += [
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root),
    ]
    with _service(command, lambda: _healthy(port), "mlflow server", 60):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def mlflow_ui(backend_store_uri: str) -> Iterator[str]:
    """The real MLflow UI (`mlflow server`) over an existing store, on loopback; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", backend_store_uri]
    with _service(command, lambda: _healthy(port), "mlflow server", 90):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def rendered_page() -> Callable[[str, str], str]:
    """Debian's headless Chromium (installed from Debian's packages on first use, as podman-here does
    for podman): a function from URL to the DOM after the page's scripts ran, loaded again (up to eight
    times, on a busy machine) until it contains `marker`: a cold server answers lazy parts late."""
    if shutil.which("chromium") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True)

    def render(url: str, marker: str) -> str:
        command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
        command += ["--virtual-time-budget=60000", "--window-size=1400,2000", url]
        for _ in range(8):
            page = subprocess.run(command, capture_output=True, text=True, check=True, timeout=180).stdout
            if marker in page:
                break
            time.sleep(5)
        return page

    return render


def _healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _service(command: list[str], ready: Callable[[], bool], what: str, timeout: float) -> Iterator[None]:
    """Run a background service until the block ends, once `ready()`; it is stopped also when it never
    becomes ready or the block fails."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start")
            time.sleep(0.2)
        yield
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite's blob service on loopback (npm package `azurite`, installed by `npm ci`)."""
    yield from _azurite(tmp_path_factory.mktemp("azurite"), [], "http")


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite over HTTPS accepting Microsoft Entra bearer tokens (`--oauth basic`: issuer, audience and
    expiry are checked, the signature is not); `ca_bundle` is its certificate."""
    workspace = tmp_path_factory.mktemp("azurite-oauth")
    cert, key = self_signed_certificate(workspace)
    for running in _azurite(workspace, ["--oauth", "basic", "--cert", str(cert), "--key", str(key)], "https"):
        yield running | {"ca_bundle": str(cert)}


def _azurite(workspace: Path, options: list[str], scheme: str) -> Iterator[dict[str, str]]:
    binary = shutil.which("azurite-blob") or REPO / "node_modules" / ".bin" / "azurite-blob"
    if not Path(binary).exists():
        pytest.fail("Azurite is not installed: run `npm ci` in the repository (see README)")
    port = free_port()
    command = [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(workspace / "data"),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        *options,
    ]
    with _service(command, lambda: _accepts(port), "Azurite", 30):
        endpoint = f"{scheme}://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        yield {
            "endpoint": endpoint,
            "account": AZURITE_ACCOUNT,
            "key": AZURITE_KEY,
            "connection_string": (
                f"DefaultEndpointsProtocol={scheme};AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoint};"
            ),
        }
