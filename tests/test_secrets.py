"""No serving key, SAS token, account key or connection string in anything a run writes, and keys
compared in constant time."""

from __future__ import annotations

import hmac
import io
import json
import os
import re
import subprocess
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.deployments import key_path
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import encode_png
from mnist_mlops.keys import KeyRing, previous_key_path, read_key, rotate_key
from mnist_mlops.runner import stream_node
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import Scorer
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment
from mnist_mlops.sources import CONNECTION_STRING_ENV, SourceError, open_source
from mnist_mlops.uris import scrub
from tests.datasets import make_tarball
from tests.test_serving import digits_model

KEY = "k" * 43


def files_holding(roots: list[Path], secrets: dict[str, str], *, skip: set[Path]) -> list[str]:
    """`<file>: <secret name>` for every file under `roots` (binary ones too) that holds a secret."""
    hits = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path not in skip:
                data = path.read_bytes()
                hits += [f"{path}: {name}" for name, secret in secrets.items() if secret.encode() in data]
    return hits


@pytest.mark.slow
@pytest.mark.azurite
def test_no_secret_in_anything_a_run_writes(deployed_run, azurite, tmp_path: Path) -> None:
    """Runs read the shared run's data from Azurite by SAS URL and by connection string (in their
    environment), one with a forged SAS fails; the pipeline is compiled for Azure ML; the deployed model
    is served and refuses wrong keys. Every file all of that wrote, the shared run's too, and every line
    printed or answered, is searched for each secret."""
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    service = BlobServiceClient.from_connection_string(azurite["connection_string"])
    container = service.create_container(f"secrets-{os.getpid()}")
    tarball = make_tarball(deployed_run.data, tmp_path / "mnist.tar.gz")
    container.upload_blob("v1/mnist.tar.gz", tarball.read_bytes())
    token = generate_container_sas(
        azurite["account"],
        container.container_name,
        account_key=azurite["key"],
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    blob_url = f"{azurite['endpoint']}/{container.container_name}/v1/mnist.tar.gz"
    signature = urllib.parse.parse_qs(token)["sig"][0]
    sent_signature = re.search(r"\bsig=([^&]+)", token)[1]  # as the token spells it, partly URL-encoded
    forged_signature = "Zm9yZ2VkK3NpZ25hdHVyZS9ub3QvdmFsaWQ9PQ=="
    forged = token.replace(sent_signature, urllib.parse.quote(forged_signature, safe=""))
    key_file = key_path(deployed_run.registry, deployed_run.model)
    key = read_key(key_file)
    secrets = {
        "serving key": key,
        "serving key prefix": key[:20],
        "account key": azurite["key"],
        "connection string": azurite["connection_string"],
        "SAS signature": signature,
        "SAS signature, as sent": sent_signature,
        "forged SAS signature": forged_signature,
    }
    assert forged != token

    work = tmp_path / "work"
    work.mkdir()
    printed: list[str] = []
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    environment[CONNECTION_STRING_ENV] = azurite["connection_string"]
    command = [str(Path(sys.executable).parent / "mnist-mlops")]
    place = ["--until", "ingest", "--runs-dir", str(work / "runs")]
    place += ["--registry", f"sqlite:///{work / 'registry' / 'mlflow.db'}"]

    def mnist_mlops(*argv: str) -> int:
        done = subprocess.run(
            [*command, *argv], cwd=work, env=environment, capture_output=True, text=True, check=False
        )
        printed.extend([done.stdout, done.stderr])
        return done.returncode

    assert mnist_mlops("run", "--data", f"{blob_url}?{token}", *place) == 0, printed[-2:]
    assert mnist_mlops("run", "--data", f"azureblob://{container.container_name}/v1", *place) == 0, printed[
        -2:
    ]
    assert mnist_mlops("run", "--data", f"{blob_url}?{forged}", *place) != 0
    assert "Azure Blob request failed" in printed[-2] + printed[-1]
    assert mnist_mlops("compile", "--target", "aml", "--out", str(work / "aml")) == 0, printed[-2:]

    served = server_environment(
        f"models:/{deployed_run.model}@production",
        registry=deployed_run.registry,
        key_file=key_file,
        request_log=work / "requests.jsonl",
    )
    png = encode_png(np.zeros((28, 28), np.uint8))
    with running_server(served, log_path=work / "server.log") as server:
        assert ScoringClient(server.url, key).score(png, "image/png")[0] == 200
        for offered in (f"Bearer {key[:-1]}x", f"Basic {key}", key, f"Bearer {key[:20]}"):
            status, answer = ScoringClient(server.url).score(png, "image/png", {"Authorization": offered})
            assert status == 401
            printed.append(json.dumps(answer))

    skip = {key_file, previous_key_path(key_file)}  # where the key belongs
    hits = files_holding([deployed_run.runs.parent, work], secrets, skip=skip)
    hits += [
        f"printed: {name}" for name, secret in secrets.items() if any(secret in text for text in printed)
    ]
    assert not hits, "secrets found:\n" + "\n".join(hits)


def test_keys_are_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every offered token, right, wrong, short, long or empty, is checked with `hmac.compare_digest`
    against every key the server holds, the same number of comparisons each time: how long a refusal
    takes does not tell how much of a key was right."""
    comparisons: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def recorded(offered: bytes, expected: bytes) -> bool:
        comparisons.append((offered, expected))
        return real_compare(offered, expected)

    monkeypatch.setattr(hmac, "compare_digest", recorded)
    key_file = tmp_path / "endpoint.key"
    atomic_write_text(key_file, KEY + "\n", private=True)
    rotate_key(key_file, grace_seconds=60)
    current = read_key(key_file)
    for keys, valid in ((KEY, {KEY}), (KeyRing(key_file), {current, KEY})):
        scorer = Scorer(digits_model(), key=keys, limits=Limits())
        counts = set()
        offers = [*valid, current[:-1] + "x", current[:10], "", "x" * 500, KEY + KEY]
        for offered in offers:
            comparisons.clear()
            assert scorer.authorized(f"Bearer {offered}") == (offered in valid), offered
            assert comparisons and all(pair[0] == offered.encode() for pair in comparisons)
            counts.add(len(comparisons))
        assert len(counts) == 1, f"{type(keys).__name__}: {counts} comparisons depending on the token"


SAS_URL = "https://acct.blob.core.windows.net/data/v1?sv=2024-11-04&sp=rl&sig=c2VjcmV0K3NpZw%3D%3D"
CONNECTION = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5K2tleQ==;EndpointSuffix=x"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (SAS_URL, SAS_URL.replace("c2VjcmV0K3NpZw%3D%3D", "***")),
        (f"'source_uri': '{SAS_URL}'", f"'source_uri': '{SAS_URL.replace('c2VjcmV0K3NpZw%3D%3D', '***')}'"),
        (CONNECTION, CONNECTION.replace("a2V5K2tleQ==", "***")),
        ("https://user:pa55@host/x", "https://user:***@host/x"),
        ("http://127.0.0.1:10000/devstoreaccount1/c", "http://127.0.0.1:10000/devstoreaccount1/c"),
        ("signal=1 designs=2", "signal=1 designs=2"),
    ],
)
def test_scrub_removes_the_secret_and_keeps_the_rest(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed


def test_a_node_printing_a_sas_url_logs_it_scrubbed(tmp_path: Path) -> None:
    """mldesigner prints a component's arguments: the node's log and console must not keep the SAS."""
    log = tmp_path / "log.txt"
    console = io.StringIO()
    code = stream_node(
        [sys.executable, "-c", f"print({SAS_URL!r}); print({CONNECTION!r})"],
        dict(os.environ),
        log_path=log,
        label="ingest",
        verbose=True,
        console=console,
        errors=console,
    )
    assert code == 0
    for where in (log.read_text(), console.getvalue()):
        assert "sig=***" in where and "AccountKey=***" in where
        assert "c2VjcmV0K3NpZw" not in where and "a2V5K2tleQ" not in where


def test_a_malformed_connection_string_is_a_clear_error_that_does_not_show_it(monkeypatch) -> None:
    monkeypatch.setenv(CONNECTION_STRING_ENV, "AccountKey=a2V5K2tleQ==;no-account-name")
    with (
        pytest.raises(SourceError, match="is not a storage connection string") as refused,
        open_source("azureblob://data/v1"),
    ):
        pass
    assert "a2V5K2tleQ" not in str(refused.value)


def test_an_azure_ml_job_refuses_a_sas_url_as_its_data() -> None:
    """A job's inputs are stored with its definition: `submit --data <SAS URL>` would keep the token there."""
    from mnist_mlops.pipelines.aml import training_job

    with pytest.raises(UserInputError, match="SAS token in a job's input") as refused:
        training_job(SAS_URL)
    assert "c2VjcmV0K3NpZw" not in str(refused.value)
