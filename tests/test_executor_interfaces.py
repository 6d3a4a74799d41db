"""Every component's executor carries its ports' names (issue 11: one interface per component, declared
once): whoever calls `run_<stage>` with keywords uses the names the spec, the CLI and the graph use."""

from __future__ import annotations

import importlib
import inspect

import pytest

from mnist_mlops.ports import component_names, load_spec


@pytest.mark.parametrize("name", component_names())
def test_every_port_is_a_parameter_of_the_executor(name):
    executor = importlib.import_module(f"mnist_mlops.components.{name}.executor")
    parameters = inspect.signature(getattr(executor, f"run_{name}")).parameters
    spec = load_spec(name)
    ports = [*spec["inputs"], *spec["outputs"]]
    missing = [port for port in ports if port not in parameters]
    assert not missing, f"run_{name} has no parameter named after port(s) {', '.join(missing)}"
