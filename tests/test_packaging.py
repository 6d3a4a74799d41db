"""The library imports as a user expects: components as objects, specs and schemas as package data."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

from mnist_mlops import contracts
from mnist_mlops.cli import build_parser
from mnist_mlops.ports import component_names


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
    """Every command of the parser, each component among them, in the installed script's help."""
    script = Path(sys.executable).with_name("mnist-mlops")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    commands = result.stdout.split("positional arguments:", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^ {4}(\S+)", commands, re.MULTILINE)
    (subcommands,) = [
        action.choices for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    assert listed == list(subcommands)
    assert {"run", *component_names(), "specs", "new-component", "image"} <= set(listed)
