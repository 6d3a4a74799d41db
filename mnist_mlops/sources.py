"""Where data comes from: a local folder or .tar.gz, a sha256-pinned http(s) tarball, or Azure Blob.

`open_source(uri)` brings any of them to a local path (downloads are cached by content hash) and
`read_files(path)` returns their regular files. On AML, `azureml://` datastore inputs arrive mounted
as folders, so they are just local folders here.

Source URIs:
  /path/to/folder or /path/to/data.tar.gz         local
  https://host/mnist.tar.gz  (+ sha256 pin)         downloaded with a progress bar, verified, cached
  https://<account>.blob.core.windows.net/<container>[/<prefix>]?<SAS>   Azure Blob via a SAS token,
                                                    outside jobs only: a job's parameters are stored
                                                    with its definition, so a job refuses it
  azureblob://<container>[/<prefix>]                Azure Blob with the job's identity at the account
                                                    AZURE_STORAGE_ACCOUNT_URL (no secret anywhere), or
                                                    via AZURE_STORAGE_CONNECTION_STRING
  mnist                                             the original MNIST IDX files from a public mirror,
                                                    each pinned by its published sha256, cached
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mnist_mlops.archives import DEFAULT_MAX_INFLATED_BYTES, FileEntry, iter_tar_gz
from mnist_mlops.atomic import atomic_write_bytes
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file
from mnist_mlops.uris import is_blob_sas_url, redact, scrub

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_URL_ENV = "AZURE_STORAGE_ACCOUNT_URL"
"""The storage account's URL (not a secret): azureblob:// sources are then read with the job's own
identity (`mnist_mlops.azure_identity`), so no key or SAS token travels as a job parameter."""
JOB_ENV = ("AZUREML_RUN_ID", "KFP_POD_NAME")
"""Set in an Azure ML job and in a Kubeflow task."""
CACHE_ENV = "MNIST_MLOPS_CACHE"
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
MNIST = "mnist"
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
"""The published SHA-256 of each original MNIST file (the same on every mirror)."""


class SourceError(UserInputError):
    """A source cannot be read: missing, unreachable, not matching its pin, or not a dataset."""


@dataclass(frozen=True)
class LocalSource:
    """A source brought to this machine; `uri` is safe to record (credentials removed)."""

    path: Path
    uri: str
    kind: str


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mnist-mlops")


@contextmanager
def open_source(uri: str, *, sha256: str | None = None) -> Iterator[LocalSource]:
    """Yield the source at `uri` as a local path; temporary downloads are removed afterwards."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if uri == MNIST:
        yield LocalSource(download_mnist(), f"{MNIST} ({MNIST_MIRRORS[0]})", "http")
    elif scheme == "azureblob" or is_blob_sas_url(uri):
        if is_blob_sas_url(uri) and any(os.environ.get(name) for name in JOB_ENV):
            raise SourceError(
                f"source {redact(uri)}: a SAS token in a job parameter is stored in the job's definition;"
                f" use azureblob://<container>/<prefix> with {ACCOUNT_URL_ENV} and the job's identity"
            )
        with tempfile.TemporaryDirectory(prefix="mnist-mlops-blob-") as staging:
            download_blobs(uri, Path(staging))
            yield LocalSource(Path(staging), redact(uri), "azure_blob")
    elif scheme in ("http", "https"):
        yield LocalSource(download_pinned(uri, sha256), redact(uri), "http")
    elif scheme in ("", "file"):
        path = Path(urllib.parse.urlsplit(uri).path if scheme == "file" else uri).expanduser()
        if not path.exists():
            raise SourceError(f"source {uri}: no such file or folder")
        kind = "tarball" if path.is_file() else "local_folder"
        if sha256 and (kind != "tarball" or sha256_file(path) != sha256.lower()):
            raise SourceError(f"source {uri}: does not match its sha256 pin (pins apply to single files)")
        yield LocalSource(path.resolve(), str(path.resolve()), kind)
    else:
        raise SourceError(
            f"source {redact(uri)}: unsupported scheme {scheme!r} (local path, http(s), azureblob)"
        )


def download_mnist(mirrors: tuple[str, ...] = MNIST_MIRRORS, files: dict[str, str] = MNIST_FILES) -> Path:
    """The four IDX files in one cached folder, each verified; a failing mirror falls back to the next."""
    folder = cache_dir() / "mnist-idx"
    for name, sha256 in files.items():
        target = folder / name
        if target.is_file() and sha256_file(target) == sha256:
            continue
        failures = []
        for mirror in mirrors:
            try:
                atomic_write_bytes(target, download_pinned(mirror + name, sha256).read_bytes())
                break
            except SourceError as error:
                failures.append(str(error))
        else:
            raise SourceError(f"MNIST file {name}: every mirror failed: {'; '.join(failures)}")
    return folder


def download_pinned(url: str, sha256: str | None) -> Path:
    """Download `url` once into the cache, verified against its sha256 pin."""
    if not sha256 or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
        raise SourceError(f"source {redact(url)}: an http(s) source needs its sha256 pin (64 hex digits)")
    sha256 = sha256.lower()
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
    target = cache_dir() / "downloads" / sha256 / name
    if target.is_file() and sha256_file(target) == sha256:
        return target
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = _read_with_progress(response, name)
    except (urllib.error.URLError, OSError) as error:
        raise SourceError(f"source {redact(url)}: download failed ({scrub(str(error))})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SourceError(f"source {redact(url)}: sha256 is {actual}, but the pin is {sha256}; not used")
    atomic_write_bytes(target, data)
    return target


def _read_with_progress(response, name: str) -> bytes:
    from tqdm import tqdm

    total = int(response.headers.get("Content-Length") or 0) or None
    chunks = []
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", file=sys.stderr) as bar:
        while chunk := response.read(1 << 20):
            chunks.append(chunk)
            bar.update(len(chunk))
    return b"".join(chunks)


def download_blobs(uri: str, target: Path) -> None:
    """Copy every blob under the container/prefix of `uri` into `target`, keeping relative names."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient

    container, prefix = _container_client(uri, ContainerClient)
    try:
        exact = (
            [b for b in container.list_blobs(name_starts_with=prefix) if b.name == prefix] if prefix else []
        )
        folder = prefix.rstrip("/") + "/" if prefix else None
        blobs = exact or [
            b for b in container.list_blobs(name_starts_with=folder) if not b.name.endswith("/")
        ]
        if not blobs:
            raise SourceError(f"source {redact(uri)}: no blobs found")
        base = PurePosixPath(prefix).parent if exact else PurePosixPath(prefix)
        for blob in blobs:
            relative = (
                PurePosixPath(blob.name).relative_to(base) if str(base) != "." else PurePosixPath(blob.name)
            )
            if relative.is_absolute() or ".." in relative.parts:
                raise SourceError(
                    f"source {redact(uri)}: blob name {blob.name!r} escapes the prefix; refused"
                )
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(container.download_blob(blob.name).readall())
            stamp = blob.last_modified.timestamp()
            os.utime(destination, (stamp, stamp))
    except AzureError as error:
        message = scrub(str(error).splitlines()[0])  # the SDK may quote the request's URL, SAS and all
        raise SourceError(f"source {redact(uri)}: Azure Blob request failed ({message})") from None
    except (OSError, ValueError) as error:
        raise SourceError(
            f"source {redact(uri)}: blobs do not form a folder tree ({scrub(str(error))})"
        ) from None


def _container_client(uri: str, container_client_type):
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "azureblob":
        prefix = parsed.path.lstrip("/")
        if connection := os.environ.get(CONNECTION_STRING_ENV):
            try:
                return container_client_type.from_connection_string(connection, parsed.netloc), prefix
            except ValueError:  # the SDK's message is clear and secret-free, but comes as a traceback
                raise SourceError(
                    f"source {uri}: {CONNECTION_STRING_ENV} is not a storage connection string"
                    " (its value is not shown)"
                ) from None
        if account := os.environ.get(ACCOUNT_URL_ENV):
            from mnist_mlops.azure_identity import credential

            return container_client_type(account, parsed.netloc, credential=credential()), prefix
        raise SourceError(
            f"source {uri}: set {ACCOUNT_URL_ENV} (read with the job's identity) or {CONNECTION_STRING_ENV}"
            " to read azureblob:// sources"
        )
    parts = parsed.path.lstrip("/").split("/")
    # Azurite and other emulators put the account in the path: http://127.0.0.1:10000/<account>/<container>
    emulated = parsed.hostname in ("127.0.0.1", "localhost") or (parsed.hostname or "").startswith("127.")
    account_parts = 1 if emulated else 0
    if len(parts) <= account_parts or not parts[account_parts]:
        raise SourceError(f"source {redact(uri)}: the SAS URL names no container")
    container_path = "/".join(parts[: account_parts + 1])
    prefix = "/".join(parts[account_parts + 1 :])
    container_url = urllib.parse.urlunsplit(
        (parsed.scheme, parsed.netloc, "/" + container_path, parsed.query, "")
    )
    return container_client_type.from_container_url(container_url), prefix


def iter_files(path: Path, *, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> Iterable[FileEntry]:
    """Regular files of a local folder or .tar.gz, paths relative to it; a tarball's read as it inflates.

    A folder holding exactly one tarball and no other data (how a mounted AML data asset of a tarball
    looks) is read as that tarball. Symbolic links in folders are refused like links in archives.
    """
    if path.is_file():
        if not path.name.endswith(TARBALL_SUFFIXES):
            raise SourceError(f"source {path}: a file source must be a .tar.gz or .tgz archive")
        return iter_tar_gz(path, max_bytes=max_bytes)
    entries = list(_walk(path))
    tarballs = [entry for entry in entries if entry.path.endswith(TARBALL_SUFFIXES)]
    if len(tarballs) == 1 and len(entries) == 1:
        return iter_tar_gz(path / tarballs[0].path, max_bytes=max_bytes)
    return entries


def read_files(path: Path, *, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> list[FileEntry]:
    """`iter_files`, all at once."""
    return list(iter_files(path, max_bytes=max_bytes))


def _walk(root: Path) -> Iterator[FileEntry]:
    for directory, folders, files in os.walk(root):
        base = Path(directory)
        for name in [*folders, *files]:
            if (base / name).is_symlink():
                raise SourceError(
                    f"source {root}: {(base / name).relative_to(root)} is a symbolic link; refused"
                )
        folders.sort()
        for name in sorted(files):
            full = base / name
            info = full.stat()
            relative = full.relative_to(root).as_posix()
            if not stat.S_ISREG(info.st_mode):
                raise SourceError(
                    f"source {root}: {relative} is not a regular file (device or FIFO?); refused"
                )
            yield FileEntry(relative, full.read_bytes(), info.st_mtime)
