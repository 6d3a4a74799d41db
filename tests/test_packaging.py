"""The library imports as a user expects: components as objects, specs and schemas as package data."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

from mnist_mlops import contracts


def test_components_import_as_mldesigner_components():
    from azure.ai.ml.entities import CommandComponent

    from mnist_mlops.components import ingest, preprocess

    assert isinstance(ingest.component, CommandComponent)
    assert preprocess.component.name == "mnist_mlops_preprocess"


def test_specs_and_schemas_ship_as_package_data():
    for name in ("ingest", "preprocess"):
        package = resources.files(f"mnist_mlops.components.{name}")
        assert (package / "spec.yaml").is_file()
    environments = resources.files("mnist_mlops.components") / "environments"
    assert (environments / "data" / "Dockerfile").is_file() and (
        environments / "model" / "requirements.txt"
    ).is_file()
    assert {"dataset_manifest", "data_report", "preprocessed_manifest", "run_record"} <= set(
        contracts.schema_names()
    )


def test_console_script_lists_the_components():
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("run", "ingest", "preprocess", "specs", "image"):
        assert command in result.stdout
