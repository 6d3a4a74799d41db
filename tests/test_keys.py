"""Endpoint key rotation: the new key is valid at once, the previous one for its grace period only, both
compared in constant time; files owner-only and written whole; a running server follows a rotation
without a restart or a failed request."""

from __future__ import annotations

import hmac
import json
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import cli, keys
from mnist_mlops.atomic import atomic_write_text
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import encode_png
from mnist_mlops.keys import KeyRing, previous_key_path, read_key, rotate_key
from mnist_mlops.serving.payloads import Limits
from mnist_mlops.serving.scorer import Scorer
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment
from tests.test_serving import call, digits_model


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "deployments" / "mnist-mlops.key"
    atomic_write_text(path, "first-key-" + "a" * 30 + "\n", private=True)
    return path


def accepts(ring: KeyRing, key: str) -> bool:
    return ring.accepts(key.encode())


def test_a_rotated_key_is_valid_at_once_and_the_old_one_until_its_grace_ends(key_file):
    clock = Clock()
    ring = KeyRing(key_file, clock=clock)
    old = read_key(key_file)
    valid_until = rotate_key(key_file, grace_seconds=60)
    new = read_key(key_file)
    assert new != old and len(new) >= 32 and abs(valid_until - (time.time() + 60)) < 5
    assert accepts(ring, new) and accepts(ring, old)  # the same ring: no restart
    clock.now = valid_until - 0.01
    assert accepts(ring, old)
    clock.now = valid_until
    assert not accepts(ring, old) and accepts(ring, new)
    assert not accepts(ring, "x" * len(new)) and not accepts(ring, "")


def test_a_second_rotation_ends_the_first_key_s_grace(key_file):
    ring = KeyRing(key_file)
    first = read_key(key_file)
    rotate_key(key_file, grace_seconds=600)
    second = read_key(key_file)
    rotate_key(key_file, grace_seconds=600)
    assert accepts(ring, read_key(key_file)) and accepts(ring, second) and not accepts(ring, first)


def test_key_files_are_owner_only_and_hold_what_clients_and_servers_read(key_file):
    old = read_key(key_file)
    rotate_key(key_file, grace_seconds=5)
    for path in (key_file, previous_key_path(key_file)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == read_key(key_file)  # one line: `$(cat key)` stays the key
    assert json.loads(previous_key_path(key_file).read_text())["key"] == old
    assert sorted(path.name for path in key_file.parent.iterdir()) == [
        ".mnist-mlops.key.lock",
        "mnist-mlops.key",
        "mnist-mlops.key.previous",
    ]  # nothing staged left behind


def test_both_keys_are_compared_every_time(key_file, monkeypatch):
    ring = KeyRing(key_file)
    old = read_key(key_file)
    rotate_key(key_file, grace_seconds=60)
    comparisons = []
    real = hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest", lambda a, b: comparisons.append(1) or real(a, b))
    for offered in (read_key(key_file), old, "not-the-key-" + "z" * 31):
        comparisons.clear()
        ring.accepts(offered.encode())
        assert len(comparisons) == 2, offered


def test_a_broken_key_file_keeps_the_keys_a_server_has(key_file, capsys):
    ring = KeyRing(key_file)
    key = read_key(key_file)
    key_file.write_text("short\n")
    assert accepts(ring, key) and not accepts(ring, "short")
    assert "the previous keys stay" in capsys.readouterr().err


def test_rotation_refusals_name_the_problem(tmp_path, key_file):
    with pytest.raises(UserInputError, match=r"none to rotate \(deploy or serve makes it\)"):
        rotate_key(tmp_path / "missing.key")
    with pytest.raises(UserInputError, match="0 or more seconds"):
        rotate_key(key_file, grace_seconds=-1)
    with pytest.raises(UserInputError, match="cannot read the key"):
        KeyRing(tmp_path / "missing.key")


def test_keys_rotate_command_never_prints_a_key(key_file, capsys):
    old = read_key(key_file)
    assert cli.main(["keys", "rotate", "--key-file", str(key_file), "--grace-seconds", "30"]) == 0
    out = capsys.readouterr().out
    assert f"rotated {key_file}" in out and "stays valid until" in out and "(30 s)" in out
    assert old not in out and read_key(key_file) not in out


def test_the_default_key_file_is_the_endpoint_key_beside_the_registry(tmp_path, capsys):
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["keys", "rotate", "--registry", registry]) == 2
    assert "deployments/mnist-mlops.key: none to rotate" in capsys.readouterr().err


def test_a_scorer_on_a_key_ring_follows_a_rotation(key_file):
    scorer = Scorer(digits_model(), key=KeyRing(key_file), limits=Limits())
    old = read_key(key_file)
    png = encode_png(np.full((28, 28), 90, np.uint8))
    assert call(scorer, png, "image/png", key=old)[0] == 200
    rotate_key(key_file, grace_seconds=0)
    assert call(scorer, png, "image/png", key=old)[0] == 401
    assert call(scorer, png, "image/png", key=read_key(key_file))[0] == 200


@pytest.mark.slow  # starts a server
def test_rotating_under_traffic_fails_no_request_but_the_old_key_s_after_its_grace(deployed_run, tmp_path):
    key_file = tmp_path / "endpoint.key"
    atomic_write_text(key_file, "served-key-" + "b" * 32 + "\n", private=True)
    old = read_key(key_file)
    environment = server_environment(
        "models:/mnist-mlops/1", registry=deployed_run.registry, key_file=key_file
    )
    png = encode_png(np.full((28, 28), 90, np.uint8))
    grace = 2.0
    fresh: list[int] = []
    stale: list[tuple[float, int]] = []
    stop = threading.Event()
    with running_server(environment) as server:

        def send(read_each_time: bool) -> None:
            while not stop.is_set():
                key = read_key(key_file) if read_each_time else old
                status, _ = ScoringClient(server.url, key).score(png, "image/png")
                (fresh.append(status) if read_each_time else stale.append((time.time(), status)))

        clients = [threading.Thread(target=send, args=(flag,)) for flag in (True, True, False)]
        for thread in clients:
            thread.start()
        time.sleep(1)
        rotate = [sys.executable, "-m", "mnist_mlops.cli", "keys", "rotate", "--key-file", str(key_file)]
        rotated = subprocess.run(
            [*rotate, "--grace-seconds", str(grace)],
            capture_output=True,
            text=True,
            check=True,
        )
        valid_until = json.loads(previous_key_path(key_file).read_text())["valid_until"]
        time.sleep(grace + 2)
        stop.set()
        for thread in clients:
            thread.join()
    assert "rotated" in rotated.stdout and read_key(key_file) != old
    assert len(fresh) > 20 and set(fresh) == {200}
    before = {status for at, status in stale if at < valid_until - 0.5}
    after = {status for at, status in stale if at > valid_until + 0.5}
    assert before == {200} and after == {401}
