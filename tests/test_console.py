"""What a local run leaves and says at its end: output files named after what they hold, and closing
lines a user can copy (what is in production, how to serve it, how to call it, where the figures are).

The fast tests check the file-naming rule over every component's file outputs, and the closing lines of
a deploy record (over real preprocessed test images), with and without a server already on its port, of
a declined model and of a run stopped before deploy; the slow one reads the console of a real
`mnist-mlops run` (conftest `deployed_run`) and runs its printed serve and curl lines as a user would.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_mlops import contracts
from mnist_mlops.artifacts import ARTIFACTS, file_name
from mnist_mlops.contracts import schema_names
from mnist_mlops.dataset import load_split
from mnist_mlops.pipelines.graph import Ref, output_path, ref_path, training_pipeline
from mnist_mlops.pipelines.local import _closing, _command, _outcome
from mnist_mlops.ports import component_names, load_spec
from mnist_mlops.serving.server import (
    RunningServer,
    free_port,
    stop_process,
    wait_until_healthy,
)
from tests.datasets import small_splits
from tests.models import preprocessed_digits

MODEL = "mnist-mlops"


def file_outputs() -> list[tuple[str, str]]:
    return [
        (stage, port)
        for stage in component_names()
        for port, definition in load_spec(stage)["outputs"].items()
        if definition["type"] == "uri_file"
    ]


def test_every_file_output_keeps_the_extension_of_what_it_holds():
    names = {(stage, port): file_name(stage, port) for stage, port in file_outputs()}
    assert names[("train", "training_curves")] == "training_curves.png"
    assert names[("batch_score", "predictions")] == "predictions.csv"
    assert names[("evaluate", "blessing")] == "blessing.json"
    for (stage, port), name in names.items():
        kind = ARTIFACTS[(stage, port)]
        assert name.startswith(f"{port}."), (stage, port, name)
        assert name.endswith(".json") == (kind in schema_names()), (stage, port, kind, name)


def test_a_run_places_file_outputs_by_that_name_and_folders_by_the_port(tmp_path):
    nodes = training_pipeline({})
    curves = output_path(tmp_path, "train", "train", "training_curves")
    assert curves == tmp_path / "train" / "training_curves.png"
    assert output_path(tmp_path, "train", "train", "model") == tmp_path / "train" / "model"
    assert ref_path(tmp_path, Ref("train", "training_curves"), nodes).name == "training_curves.png"
    assert ref_path(tmp_path, Ref("evaluate", "blessing"), nodes) == tmp_path / "evaluate" / "blessing.json"


def write_deployment(run_dir: Path, **fields) -> dict[str, Path]:
    """A run folder whose deploy node wrote a record with `fields` (only what the closing lines read)."""
    record = {
        "model_name": MODEL,
        "model_version": "2",
        "previous_version": "1",
        "target": "local",
        "endpoint": "http://127.0.0.1:5001/score",
        "outcome": "deployed",
    } | fields
    (run_dir / "deploy").mkdir(parents=True)
    (run_dir / "deploy" / "deployment_record.json").write_text(json.dumps(record))
    return {"deploy": run_dir / "deploy"}


def test_a_declined_model_ends_saying_what_stays_in_production_and_nothing_to_serve(tmp_path, capsys):
    folders = write_deployment(tmp_path, outcome="skipped", model_version=None, endpoint=None)
    assert _outcome(folders, set(), []) == f"not deployed: production stays at {MODEL} v1"
    _closing(tmp_path, {"nodes": []}, folders, f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = capsys.readouterr().out
    assert (
        "serve" not in out
        and "curl" not in out
        and f"outputs in {tmp_path}: run.json (the run record)\n" in out
    )
    assert not (tmp_path / "example_request.json").exists()

    first = write_deployment(tmp_path / "first", outcome="skipped", previous_version=None, model_version=None)
    assert _outcome(first, set(), []) == "not deployed: production stays at nothing"


def deployed_folder(run_dir: Path, test_data: Path, port: int) -> tuple[dict, dict[str, Path]]:
    """A run folder whose deploy node deployed v2 locally, reading its canaries from `test_data`."""
    folders = write_deployment(run_dir, endpoint=f"http://127.0.0.1:{port}/score")
    entry = {"name": "deploy", "inputs": {"test_data": {"path": str(test_data)}}, "outputs": {}}
    return {"nodes": [entry]}, folders


@pytest.fixture(scope="module")
def test_data(tmp_path_factory) -> Path:
    return preprocessed_digits(tmp_path_factory.mktemp("data"), small_splits(test_per_class=2))


def test_a_local_deployment_ends_with_a_serve_line_and_a_curl_line_with_its_example(
    tmp_path, test_data, capsys, monkeypatch
):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    port = free_port()
    registry = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    record, folders = deployed_folder(tmp_path, test_data, port)
    _closing(tmp_path, record, folders, registry)
    lines = capsys.readouterr().out.splitlines()
    assert f"production: {MODEL} v2 (models:/{MODEL}@production in {registry})" in lines
    key = tmp_path / "elsewhere" / "deployments" / f"{MODEL}.key"  # where serve makes or finds its key
    assert lines[-4:] == [
        "nothing is listening yet; serve it with:",
        f"  mnist-mlops serve --model models:/{MODEL}@production --registry {registry} --port {port}",
        "then, from another terminal, score 2 test images (classes 0, 1):",
        f'  curl -s -H "Authorization: Bearer $(cat {key})" -H "Content-Type: application/json"'
        f" -d @{tmp_path / 'example_request.json'} http://127.0.0.1:{port}/score",
    ]
    example = contracts.read_json(tmp_path / "example_request.json", "scoring_request")
    images, labels = load_split(
        test_data, contracts.read_json(test_data / "manifest.json", "preprocessed_manifest"), "test"
    )
    assert example["instances"] == images[[list(labels).index(0), list(labels).index(1)]].tolist()


def test_the_serve_line_names_the_installed_script_when_it_is_not_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    script = Path(sys.executable).parent / "mnist-mlops"
    assert Path(_command()).resolve() == script.resolve()  # the quick start's .venv, not activated


def test_a_server_already_listening_is_not_called_missing(tmp_path, test_data, capsys):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        record, folders = deployed_folder(tmp_path, test_data, port)
        _closing(tmp_path, record, folders, f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = capsys.readouterr().out
    assert f"something already listens on port {port}: if it is `mnist-mlops serve --model" in out
    assert "nothing is listening" not in out and "--port" not in out and "curl -s" in out


def test_a_run_stopped_before_deploy_says_production_is_unchanged(tmp_path, capsys):
    assert _outcome({"train": tmp_path / "train"}, set(), []) == "finished"
    assert "no deploy node in this run: production is unchanged" in capsys.readouterr().out


@pytest.mark.slow  # reads the shared small run (conftest `deployed_run`) and starts `mnist-mlops serve`
def test_a_run_ends_with_lines_that_serve_and_call_its_model(deployed_run, tmp_path):
    run_dir, registry, out = deployed_run.run_dir, deployed_run.registry, deployed_run.stdout
    train = next(node for node in deployed_run.record["nodes"] if node["name"] == "train")
    assert Path(train["outputs"]["training_curves"]["path"]).name == "training_curves.png"
    assert (run_dir / "train" / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert not list(run_dir.rglob("training_curves.json"))

    print(out)  # the console as a person reads it, kept in the test log
    lines = out.splitlines()
    assert f"production: {MODEL} v1 (models:/{MODEL}@production in {registry})" in lines
    assert f"run report: {run_dir / 'report.html'}" in lines
    (outputs,) = [line for line in lines if line.startswith("outputs in ")]
    assert outputs.startswith(f"outputs in {run_dir}: run.json (the run record); figures ")
    figures = outputs.partition("; figures ")[2].split(", ")
    assert {"train/training_curves.png", "evaluate/evaluation/confusion_matrix.png"} <= set(figures)
    assert all((run_dir / figure).read_bytes().startswith(b"\x89PNG") for figure in figures)
    assert "http://127.0.0.1" not in out.split("\nproduction: ")[0]  # no address before the serve line
    (curl,) = [line.strip() for line in lines if line.strip().startswith("curl ")]
    endpoint = "http://127.0.0.1:5001/score"  # deploy's default port, which serve's line names too
    assert curl.endswith(f" {endpoint}") and "$(cat " in curl
    if "something already listens on port 5001" in out:
        pytest.skip("port 5001 had a server during the shared run: its closing lines name no serve command")
    assert "nothing is listening yet; serve it with:" in lines
    (serve,) = [line.strip() for line in lines if " serve --model " in line]
    command, _, arguments = serve.partition(" serve ")
    assert arguments == f"--model models:/{MODEL}@production --registry {registry} --port 5001"

    port = free_port()  # the printed lines on a free port: this machine may serve 5001 already
    argv = shlex.split(serve)
    if command == "mnist-mlops":  # on the PATH of whoever ran it
        argv[0] = str(Path(sys.executable).parent / argv[0])
    argv[argv.index("--port") + 1] = str(port)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            argv,
            cwd=tmp_path,  # another terminal, in another folder
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_healthy(RunningServer(f"http://127.0.0.1:{port}", server, log), startup_seconds=180)
        called = subprocess.run(
            ["bash", "-c", curl.replace(endpoint, f"http://127.0.0.1:{port}/score")],
            cwd=tmp_path,  # another terminal, in another folder
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    finally:
        stop_process(server)
    answer = json.loads(called.stdout)
    assert answer["model_version"] == "1", answer
    assert len(answer["predictions"]) == 2 and answer["request_id"]
