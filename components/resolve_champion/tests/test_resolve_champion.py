"""resolve_champion: the pointer's version with its model, or a record that there is none."""

from __future__ import annotations

import mlflow
import pytest

from mnist_mlops.champions import read_champion
from mnist_mlops.components.resolve_champion.executor import run_resolve_champion
from mnist_mlops.errors import UserInputError
from mnist_mlops.registry import set_pointer


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


@pytest.fixture
def registry(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working folder
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_no_registry_yet_means_no_champion_and_creates_none(tmp_path, registry):
    record = run_resolve_champion(tmp_path / "champion", registry=registry)
    assert (record["found"], record["version"]) == (False, None)
    assert "names no version" in record["reason"]
    assert read_champion(tmp_path / "champion") == (record, None)
    assert not (tmp_path / "mlflow.db").exists(), "resolving must not create a registry"


def test_the_pointer_names_the_champion_and_its_model_is_handed_on(tmp_path, registry):
    mlflow.set_tracking_uri(registry)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=Constant(), registered_model_name="digits", pip_requirements=[]
        )
        mlflow.pyfunc.log_model(
            name="model", python_model=Constant(), registered_model_name="digits", pip_requirements=[]
        )
    assert run_resolve_champion(tmp_path / "none", model_name="digits", registry=registry)["found"] is False

    set_pointer(registry, "digits", "production", "1")
    record = run_resolve_champion(tmp_path / "champion", model_name="digits", registry=registry)
    assert (record["found"], record["model_uri"]) == (True, "models:/digits/1")
    _, model = read_champion(tmp_path / "champion")
    assert (model / "MLmodel").is_file() and not (model / "registered_model_meta").exists()

    challenger = run_resolve_champion(
        tmp_path / "other", model_name="digits", pointer="challenger", registry=registry
    )
    assert challenger["found"] is False


def test_a_bad_parameter_is_refused_before_the_registry_is_read(tmp_path):
    with pytest.raises(UserInputError, match="parameter model_name"):
        run_resolve_champion(tmp_path / "champion", model_name=7)
    assert not (tmp_path / "champion").exists()
