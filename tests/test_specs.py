"""The compiled spec.yaml of every component matches its code, loads in azure-ai-ml and round-trips."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_component

from mnist_mlops import authoring
from mnist_mlops.environments import BASE_IMAGE, EXTRAS, environment_dir
from mnist_mlops.errors import ContractError, UserInputError
from mnist_mlops.ports import component_dir, component_names, load_metadata, load_spec
from mnist_mlops.snapshot import code_root

NAMES = component_names()
REPO = Path(__file__).resolve().parent.parent


def test_every_stage_folder_is_a_complete_component():
    """What `mnist-mlops new-component` writes, present in every component folder."""
    assert {"ingest", "train", "evaluate", "register", "deploy", "resolve_champion"} <= set(NAMES)
    for name in NAMES:
        folder = component_dir(name)
        for file_name in ("component.py", "executor.py", "spec.yaml", "metadata.yaml", "README.md"):
            assert (folder / file_name).is_file(), f"{name}: no {file_name}"
        assert list((folder / "tests").glob("test_*.py")), f"{name}: no tests"


def test_specs_and_readme_port_tables_have_not_drifted():
    drifted = authoring.sync(check=True)
    assert not drifted, f"run `mnist-mlops specs` and commit: {drifted}"


def test_specs_are_rendered_as_mldesigner_compile_writes_them(tmp_path):
    """`authoring` compiles in-process and leaves out the code snapshot compile copies (see
    `authoring._compiled_spec`); what it renders must still be the CLI's, for every component (one CLI
    call compiles them all). The CLI runs on a tree of just the components and their environments, since
    it walks every file under `code` (here the checkout, with .venv and node_modules)."""
    tree = tmp_path / "tree"
    for name in NAMES:
        (tree / "components" / name).mkdir(parents=True)
        shutil.copy2(component_dir(name) / "component.py", tree / "components" / name)
    for environment in {Path(load_spec(name)["environment"]["build"]["path"]).name for name in NAMES}:
        shutil.copytree(environment_dir(environment), tree / "components" / "environments" / environment)
    out = tmp_path / "compiled"
    compiler = [str(Path(sys.executable).parent / "mldesigner"), "compile"]
    subprocess.run(
        [*compiler, "--source", "components/*/component.py", "--output", str(out)], cwd=tree, check=True
    )
    for name in NAMES:
        (compiled,) = out.glob(f"*/mnist_mlops_{name}.yaml")
        by_cli, in_process = yaml.safe_load(compiled.read_text()), authoring._compiled_spec(name)
        for spec, root in ((by_cli, tree), (in_process, REPO)):
            build = spec["environment"]["build"]
            build["path"] = Path(build["path"]).resolve().relative_to(root.resolve()).as_posix()
        assert by_cli == in_process, name


@pytest.mark.parametrize("name", NAMES)
def test_spec_loads_and_round_trips_in_azure_ai_ml(name, tmp_path):
    component = load_component(source=component_dir(name) / "spec.yaml")
    spec = load_spec(name)
    assert component.name == spec["name"] and component.version == spec["version"]
    assert Path(component.environment.build.path).parent.name == "environments"
    assert (Path(component.base_path) / component.code).resolve() == code_root()
    dumped = tmp_path / "dumped.yaml"
    component.dump(dumped)
    reloaded = load_component(source=dumped)
    assert reloaded._to_dict()["inputs"] == component._to_dict()["inputs"]
    assert reloaded._to_dict()["outputs"] == component._to_dict()["outputs"]
    assert reloaded.command == component.command
    assert all(isinstance(value, str) for value in component.tags.values()), component.tags


@pytest.mark.parametrize("name", NAMES)
def test_metadata_was_verified_no_later_than_today(name):
    """The schema checks that last_verified is a date (load_metadata validates); whether that day has
    come yet only the calendar knows."""
    assert date.fromisoformat(load_metadata(name)["last_verified"]) <= date.today()


def test_an_unquoted_last_verified_is_judged_by_the_schema_too(tmp_path, monkeypatch):
    """YAML alone reads an unquoted 2026-12-06 as a date, and fails with no field named on 2026-13-06."""
    from mnist_mlops import ports

    catalog = "stability: beta\nowners: [maintainers]\ntags: [data]\nlast_verified: {}\n"
    for day in ("2026-12-06", "2026-13-06"):
        (tmp_path / day).mkdir()
        (tmp_path / day / "metadata.yaml").write_text(catalog.format(day))
    monkeypatch.setattr(ports, "component_dir", lambda name: tmp_path / name)
    assert ports.load_metadata("2026-12-06")["last_verified"] == "2026-12-06"
    with pytest.raises(ContractError, match=r"field \$\.last_verified .*'2026-13-06' is not a 'date'"):
        ports.load_metadata("2026-13-06")


def test_the_catalog_fields_reach_the_spec_tags_and_the_readme_from_metadata(monkeypatch):
    """What Azure ML's designer and registry list and what the README says come from metadata.yaml,
    beside the tags component.py declares."""
    metadata = {
        "stability": "stable",
        "owners": ["data team", "ml platform"],
        "tags": ["data", "ingestion"],
        "last_verified": "2026-01-31",
    }
    monkeypatch.setattr(authoring, "load_metadata", lambda name: metadata)
    spec = yaml.safe_load(authoring.render_spec("ingest"))
    catalog = {
        "stability": "stable",
        "owners": "data team, ml platform",
        "keywords": "data, ingestion",
        "last_verified": "2026-01-31",
    }
    assert spec["tags"] == {**authoring._compiled_spec("ingest")["tags"], **catalog}
    assert spec["tags"]["stage"] == "ingest"
    readme = authoring.render_readme("ingest", spec)
    assert (
        f"{authoring.CATALOG_START}\n**Stability** stable; **owners** data team, ml platform; "
        f"**tags** `data`, `ingestion`; **last verified** 2026-01-31\n{authoring.CATALOG_END}"
    ) in readme


def test_a_decorator_tag_that_metadata_owns_is_refused(monkeypatch):
    """A catalog field is written once, in metadata.yaml: the same tag in component.py is an error."""
    monkeypatch.setattr(authoring, "catalog_tags", lambda name: {"stage": "ingest"})
    with pytest.raises(
        UserInputError, match=r"ingest/component\.py: tag\(s\) stage come from metadata\.yaml"
    ):
        authoring.render_spec("ingest")


def test_the_model_environment_co_installs_with_azureml_mlflow():
    """azureml-mlflow gives jobs Azure ML's MLflow store; every pin must satisfy what it requires."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    pins = dict(
        line.split("==")
        for line in (environment_dir("model") / "requirements.txt").read_text().splitlines()
        if "==" in line
    )
    assert "azureml-mlflow" in pins and "azure-ai-ml" in pins and "azure-identity" in pins
    pins["mlflow-skinny"] = pins["mlflow"]  # mlflow X pins mlflow-skinny X
    for text in requires("azureml-mlflow"):
        requirement = Requirement(text)
        if requirement.marker is None and requirement.name in pins:
            assert requirement.specifier.contains(pins[requirement.name]), f"{requirement} vs {pins}"


def test_each_environment_is_shared_and_its_dockerfile_takes_no_build_args():
    used = {Path(load_spec(name)["environment"]["build"]["path"]).name for name in NAMES}
    assert used == set(EXTRAS)
    for name in EXTRAS:
        dockerfile = (environment_dir(name) / "Dockerfile").read_text()
        assert "ARG " not in dockerfile and f"FROM {BASE_IMAGE}\n" in dockerfile
        assert not (environment_dir(name) / ".amlignore").exists()  # uploaded as it is


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


def executor(name: str):
    import importlib

    return getattr(importlib.import_module(f"mnist_mlops.components.{name}.executor"), f"run_{name}")


@pytest.mark.parametrize("name", NAMES)
def test_executor_defaults_match_the_ports(name):
    """Python callers of the framework-free function get the same defaults as AML and the CLI."""
    import inspect

    function = executor(name)
    parameters = inspect.signature(function).parameters
    for port, definition in load_spec(name)["inputs"].items():
        if "default" in definition:
            assert port in parameters, f"run_{name} has no parameter {port}"
            assert parameters[port].default == definition["default"], f"{name}.{port}"


@pytest.mark.parametrize("name", NAMES)
def test_a_python_caller_of_an_executor_passes_the_port_checks(name, tmp_path):
    """An out-of-range value reaches no executor, whoever calls it: checked before any input is read."""
    import inspect

    from mnist_mlops.errors import UserInputError

    function = executor(name)
    parameters = inspect.signature(function).parameters
    primitive = [
        (port, definition)
        for port, definition in load_spec(name)["inputs"].items()
        if definition["type"] in ("integer", "number", "string", "boolean")
    ]
    if not primitive:
        pytest.skip(f"{name} has no parameter ports")
    port, definition = max(primitive, key=lambda item: ("max" in item[1], "enum" in item[1]))
    if "max" in definition:
        bad: object = definition["max"] + 1
    else:
        bad = "no-such-choice" if "enum" in definition else 42  # a number where a string belongs
    required = {
        parameter: str(tmp_path / parameter)
        for parameter, value in parameters.items()
        if value.default is inspect.Parameter.empty
    }
    with pytest.raises(UserInputError, match=rf"parameter {port}="):
        function(**required, **{port: bad})
