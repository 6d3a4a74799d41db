"""`mnist-mlops new-component`: the skeleton works as written and is registered by its folder alone."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml
from azure.ai.ml import load_component

from mnist_mlops import contracts
from mnist_mlops.snapshot import materialize


def files_in(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def test_a_new_component_passes_its_tests_loads_in_azure_ml_and_has_its_subcommand(tmp_path):
    tree = materialize(tmp_path / "tree")  # a source tree of this code, to add the component to
    environment = os.environ | {"PYTHONPATH": str(tree)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=tree, env=environment, capture_output=True, text=True, check=False
        )

    made = run("-m", "mnist_mlops.cli", "new-component", "count_files")
    assert made.returncode == 0, made.stderr
    folder = tree / "components" / "count_files"
    written = files_in(folder)
    assert written == [
        "README.md",
        "__init__.py",
        "component.py",
        "executor.py",
        "metadata.yaml",
        "spec.yaml",
        "tests/__init__.py",
        "tests/test_count_files.py",
    ]
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "components/count_files/tests")
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "check", "--line-length", "110", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout
    spec = load_component(folder / "spec.yaml")
    assert (Path(spec.base_path) / spec.code).resolve() == tree.resolve()
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
    contracts.validate(metadata, "component_metadata", source=str(folder / "metadata.yaml"))
    assert spec.name == "mnist_mlops_count_files"
    today = date.today().isoformat()  # its tests have just passed
    assert (metadata["stability"], metadata["last_verified"]) == ("alpha", today)
    assert (spec.tags["stability"], spec.tags["last_verified"]) == ("alpha", today)
    readme = (folder / "README.md").read_text()
    assert "| `max_files` | input | integer |" in readme
    assert "**Stability** alpha;" in readme and f"**last verified** {today}" in readme

    usage = run("-m", "mnist_mlops.cli", "count_files", "--help")  # a later process: its folder registers it
    assert usage.returncode == 0 and "--max-files" in usage.stdout, usage.stderr

    bad = run("-m", "mnist_mlops.cli", "new-component", "Count-Files")
    assert bad.returncode == 2 and "lower_snake_case" in bad.stderr
    (tree / "components" / "leftover").mkdir()  # a folder that is no component (yet)
    again = run("-m", "mnist_mlops.cli", "new-component", "leftover")
    assert again.returncode == 2 and "exists already" in again.stderr
    for taken in ("serve", "class", "count_files"):  # a command, a keyword, and now a command too
        refused = run("-m", "mnist_mlops.cli", "new-component", taken)
        assert refused.returncode == 2 and "is taken" in refused.stderr, taken
    assert not [name for name in ("Count-Files", "serve", "class") if (tree / "components" / name).exists()]
    assert files_in(folder) == written  # the refusals left the component as it was
