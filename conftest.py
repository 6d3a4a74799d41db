"""Shared pytest fixtures: local HTTP server, Azurite blob emulator, small datasets, the shared MNIST."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.datasets import small_splits, write_png_tree

REPO = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MNIST_MLOPS_SHARED", REPO.parent / "shared"))
SHARED_TARBALL = SHARED / "data" / "mnist_png.tar.gz"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite's blob service on loopback (npm package `azurite`, installed by `npm ci`)."""
    binary = shutil.which("azurite-blob") or REPO / "node_modules" / ".bin" / "azurite-blob"
    if not Path(binary).exists():
        pytest.fail("Azurite is not installed: run `npm ci` in the repository (see README)")
    port = free_port()
    workspace = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(workspace),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("Azurite did not start")
            time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    yield {
        "endpoint": endpoint,
        "account": AZURITE_ACCOUNT,
        "key": AZURITE_KEY,
        "connection_string": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint};"
        ),
    }
    process.terminate()
    process.wait(timeout=10)
