"""The library as a user installs it: a wheel built from this tree (its packages found by setup.py, its
component files by globs, so nothing is listed per component) holds every component folder's files,
and installed away from the editable checkout it runs a component and the scoring server through its
console script."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port
from mnist_mlops import contracts
from mnist_mlops.ports import component_names, load_spec
from mnist_mlops.serving.server import RunningServer, ScoringClient, wait_until_healthy
from tests.datasets import digit_images, make_tarball, small_splits, write_png_tree
from tests.models import ANY_MODEL, judged_model, register_model

SOURCE_ROOT = Path(__file__).resolve().parent.parent
COMPONENT_FILES = ("component.py", "executor.py", "spec.yaml", "metadata.yaml", "README.md")
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")
"""What the build reads besides the package folders named in pyproject.toml's package-dir."""


def component_folders() -> list[str]:
    """Every component folder of the checkout (one with a component.py), whatever made it."""
    return sorted(path.parent.name for path in (SOURCE_ROOT / "components").glob("*/component.py"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once from a copy of the build inputs (the checkout stays untouched:
    setuptools writes build/ and egg-info beside its sources)."""
    scratch = tmp_path_factory.mktemp("wheel")
    source = scratch / "source"
    config = tomllib.loads((SOURCE_ROOT / "pyproject.toml").read_text())
    for folder in config["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(SOURCE_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in BUILD_FILES:
        shutil.copy2(SOURCE_ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(scratch / "dist"), str(source)], check=True)
    (built,) = (scratch / "dist").glob("mnist_mlops-*.whl")
    return built


def test_the_wheel_holds_every_component_folder_and_no_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [
        f"mnist_mlops/components/{folder}/{name}"
        for folder in component_folders()
        for name in COMPONENT_FILES
        if f"mnist_mlops/components/{folder}/{name}" not in names
    ]
    assert component_folders() and not missing, missing
    assert "mnist_mlops/components/environments/model/Dockerfile" in names
    assert "mnist_mlops/serving/score.py" in names and "mnist_mlops/pipelines/graph.py" in names
    assert [name for name in names if "/tests/" in name] == []


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh venv holding the wheel (--no-deps) and reaching this venv's third-party packages through
    a .pth line (and the console script the component commands run); the editable install's own .pth
    finder lives there too but a .pth line does not run it, so the checkout is not importable. Returns
    its python, console script, site-packages and a working folder."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    subprocess.run([*install, str(wheel)], check=True)
    for script in {load_spec(name)["command"].split()[0] for name in component_names()}:  # mldesigner
        body = (Path(sys.executable).parent / script).read_text().split("\n", 1)[1]
        (venv / "bin" / script).write_text(f"#!{python}\n{body}")  # a dependency's script, as pip writes
        (venv / "bin" / script).chmod(0o755)
    work = tmp_path_factory.mktemp("work")
    return {"python": python, "script": venv / "bin" / "mnist-mlops", "site": Path(purelib), "work": work}


def _environment(work: Path) -> dict[str, str]:
    """The user's environment, without a way back to the checkout; caches in the working folder."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return environment | {"MNIST_MLOPS_CACHE": str(work / "cache"), "HOME": str(work / "home")}


def test_an_installed_wheel_imports_itself_not_the_checkout_and_runs_a_component(installed, tmp_path):
    work, environment = installed["work"], _environment(installed["work"])
    probe = "import mnist_mlops, mnist_mlops.snapshot as s; print(mnist_mlops.__file__, s.is_source_tree())"
    result = subprocess.run(
        [installed["python"], "-c", probe], cwd=work, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    location, source_tree = result.stdout.split()
    assert Path(location) == installed["site"] / "mnist_mlops" / "__init__.py" and source_tree == "False"

    source = make_tarball(write_png_tree(tmp_path / "src", small_splits()), tmp_path / "mnist.tar.gz")
    out = work / "ingest"
    command = [installed["script"], "ingest", "--source-uri", str(source)]
    command += ["--dataset", str(out / "dataset"), "--data-report", str(out / "data_report.json")]
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = contracts.read_json(out / "data_report.json", "data_report")
    assert (
        report["dataset_version"]
        == contracts.read_json(out / "dataset" / "manifest.json", "dataset_manifest")["dataset_version"]
    )


@pytest.fixture
def served(installed, tmp_path) -> Iterator[ScoringClient]:
    """`mnist-mlops serve` of the installed wheel on a loopback port, over a tiny registered model."""
    root = judged_model(tmp_path / "model", ANY_MODEL, train_per_class=12, test_per_class=4, epochs=2)
    registry = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    register_model(root, registry, root / "registration.json")
    key = tmp_path / "endpoint.key"
    key.write_text("installed-wheel-key\n")
    port = free_port()
    command = [installed["script"], "serve", "--model", "models:/mnist-mlops@challenger"]
    command += ["--registry", registry, "--port", str(port), "--key-file", str(key)]
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            command,
            cwd=installed["work"],
            env=_environment(installed["work"]),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server and its workers stop together
        )
    url = f"http://127.0.0.1:{port}"
    client = ScoringClient(url, key="installed-wheel-key")
    try:
        wait_until_healthy(RunningServer(url, server, tmp_path / "serve.log"), startup_seconds=180)
        yield client
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_the_installed_wheel_serves_a_registered_model(served):
    images, _ = digit_images(per_class=1, seed=3)
    status, body = served.score_json({"instances": images[:2].tolist()})
    assert status == 200, body
    contracts.validate(body, "scoring_response", source="response")
    assert body["model_version"] == "1" and len(body["predictions"]) == 2
