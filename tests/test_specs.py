"""The compiled spec.yaml of every component matches its code, loads in azure-ai-ml and round-trips."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_component

from mnist_mlops import authoring
from mnist_mlops.ports import component_dir, component_names, load_spec

NAMES = component_names()
REPO = Path(__file__).resolve().parent.parent


def test_every_stage_folder_is_a_component():
    assert NAMES == [
        "batch_score",
        "deploy",
        "evaluate",
        "ingest",
        "monitor",
        "preprocess",
        "register",
        "train",
    ]


def test_specs_and_readme_port_tables_have_not_drifted():
    drifted = authoring.sync(check=True)
    assert not drifted, f"run `mnist-mlops specs` and commit: {drifted}"


@pytest.mark.parametrize("name", NAMES)
def test_spec_loads_and_round_trips_in_azure_ai_ml(name, tmp_path):
    component = load_component(source=component_dir(name) / "spec.yaml")
    spec = load_spec(name)
    assert component.name == spec["name"] and component.version == spec["version"]
    assert component.environment.build.path.endswith("environment")
    dumped = tmp_path / "dumped.yaml"
    component.dump(dumped)
    reloaded = load_component(source=dumped)
    assert reloaded._to_dict()["inputs"] == component._to_dict()["inputs"]
    assert reloaded._to_dict()["outputs"] == component._to_dict()["outputs"]
    assert reloaded.command == component.command


@pytest.mark.parametrize("name", NAMES)
def test_metadata_and_spec_agree(name):
    metadata = yaml.safe_load((component_dir(name) / "metadata.yaml").read_text())
    spec = load_spec(name)
    assert metadata["name"] == spec["name"] and metadata["version"] == spec["version"]
    assert metadata["stability"] in ("alpha", "beta", "stable")


@pytest.mark.parametrize("name", NAMES)
def test_component_pins_match_the_project_pins(name):
    """A component image runs exactly the versions the library is tested with."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    pinned = dict(requirement.split("==") for requirement in requirements if "==" in requirement)
    conda = yaml.safe_load((component_dir(name) / "environment" / "conda.yaml").read_text())
    pip = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    assert "python=3.11" in conda["dependencies"]
    for requirement in pip:
        package, version = requirement.split("==")
        assert pinned.get(package) == version, f"{name}: {requirement} is not the project's pin"
    assert any(requirement.startswith("mldesigner==") for requirement in pip)


@pytest.mark.parametrize("name", NAMES)
def test_primitive_ports_declare_their_ranges(name):
    spec = load_spec(name)
    for port, definition in spec["inputs"].items():
        if definition["type"] in ("integer", "number"):
            assert "min" in definition and "max" in definition, f"{name}.{port} needs min and max"
    assert set(spec["environment"]) == {"build"}, (
        "no inline conda file (mldesigner would inject mlflow into it)"
    )


def test_ingest_is_never_reused_and_preprocess_is():
    assert load_spec("ingest")["is_deterministic"] is False
    assert load_spec("preprocess")["is_deterministic"] is True


EXECUTORS = {
    "ingest": "run_ingest",
    "preprocess": "run_preprocess",
    "train": "run_train",
    "evaluate": "run_evaluate",
    "register": "run_register",
    "deploy": "run_deploy",
    "batch_score": "run_batch_score",
    "monitor": "run_monitor",
}


@pytest.mark.parametrize("name", NAMES)
def test_executor_defaults_match_the_ports(name):
    """Python callers of the framework-free function get the same defaults as AML and the CLI."""
    import importlib
    import inspect

    function = getattr(importlib.import_module(f"mnist_mlops.components.{name}.executor"), EXECUTORS[name])
    parameters = inspect.signature(function).parameters
    for port, definition in load_spec(name)["inputs"].items():
        if "default" in definition and port in parameters:
            assert parameters[port].default == definition["default"], f"{name}.{port}"


def test_component_dockerfiles_are_one_template():
    """Each component folder carries its own Dockerfile (self-contained), all from one template."""
    dockerfiles = {(component_dir(name) / "environment" / "Dockerfile").read_text() for name in NAMES}
    assert len(dockerfiles) == 1
