"""Local execution: spec commands bound to paths, the CLI's generated options, and `mnist-mlops run`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mnist_mlops import contracts
from mnist_mlops.cli import main
from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines.graph import bind_parameters, parameter_overrides, training_pipeline
from mnist_mlops.ports import load_spec
from mnist_mlops.runner import render_command
from tests.datasets import small_splits, write_png_tree


def test_render_command_binds_values_and_drops_unbound_optional_blocks():
    spec = load_spec("ingest")
    argv = render_command(
        spec, {"source_uri": "/data/x y.tar.gz"}, {"dataset": "/o/d", "data_report": "/o/r.json"}
    )
    assert argv[:5] == ["mldesigner", "execute", "--source", "components/ingest/component.py", "--name"]
    assert "source_uri=/data/x y.tar.gz" in argv and "max_age_days=365" in argv
    assert not any(arg.startswith(("source_data=", "reference_report=")) for arg in argv)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"max_age_days": 0}, "below the minimum 1"),
        ({"on_stale": "ignore"}, "must be one of fail, warn"),
        ({"max_invalid_fraction": "a lot"}, "must be of type number"),
        ({"no_such_port": 1}, "no input named 'no_such_port'"),
    ],
)
def test_render_command_refuses_values_outside_the_contract(inputs, message):
    with pytest.raises(UserInputError, match=message):
        render_command(load_spec("ingest"), inputs, {"dataset": "/o/d", "data_report": "/o/r.json"})


@pytest.fixture(scope="module")
def ingested_by_the_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """`mnist-mlops ingest` run once, with paths relative to the caller's working directory; returns
    its exit code and that directory. Each run is a component process paying the SDK imports, so the
    tests of a successful CLI run share this one."""
    folder = tmp_path_factory.mktemp("cli-ingest")
    source = write_png_tree(folder / "source", small_splits())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        relative = str(source.relative_to(folder))
        code = main(["ingest", "--source-uri", relative, "--dataset", "d", "--data-report", "r.json"])
    return code, folder


def test_cli_runs_a_component_and_leaves_nothing_on_failure(tmp_path, ingested_by_the_cli, capsys):
    code, folder = ingested_by_the_cli
    assert code == 0
    contracts.read_json(folder / "d" / "manifest.json", "dataset_manifest")
    contracts.read_json(folder / "r.json", "data_report")
    code = main(
        [
            "ingest",
            "--source-uri",
            str(tmp_path / "missing"),
            "--dataset",
            str(tmp_path / "d2"),
            "--data-report",
            str(tmp_path / "r2.json"),
        ]
    )
    assert code == 2
    assert not (tmp_path / "d2").exists() and not (tmp_path / "r2.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-age-days", "abc"], "--max-age-days: 'abc' is not a valid integer"),
        (["--max-age-days", "0"], "max_age_days=0: below the minimum 1"),
        (["--on-invalid", "ignore"], "must be one of fail, skip"),
    ],
)
def test_cli_rejects_bad_parameters_with_exit_2(tmp_path, png_dataset, capsys, argv, message):
    code = main(
        [
            "ingest",
            "--source-uri",
            str(png_dataset),
            "--dataset",
            str(tmp_path / "d"),
            "--data-report",
            str(tmp_path / "r.json"),
            *argv,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def run_pipeline(data: Path, runs_dir: Path, *settings: str, registry: str | None = None) -> int:
    """`mnist-mlops run` on `data` into `runs_dir`, each of `settings` (NODE.PARAM=VALUE) as a `--set`."""
    argv = ["run", "--data", str(data), "--runs-dir", str(runs_dir)]
    argv += [word for setting in settings for word in ("--set", setting)]
    return main(argv + (["--registry", registry] if registry else []))


@pytest.mark.slow
def test_run_executes_every_stage_and_applies_overrides(deployed_run):
    run_dir, output = deployed_run.run_dir, deployed_run.stdout
    assert all(f"[{node}]" in output for node in ("ingest", "preprocess", "train", "evaluate", "deploy"))
    assert (run_dir / "ingest" / "log.txt").is_file()
    summary = json.loads((run_dir / "train" / "training_summary.json").read_text())
    settings = dict(arg.split("=", 1) for arg in deployed_run.argv if arg.startswith("train."))
    hyperparameters = summary["hyperparameters"]
    assert str(hyperparameters["epochs"]) == settings["train.epochs"]
    assert str(hyperparameters["batch_size"]) == settings["train.batch_size"]
    record = json.loads((run_dir / "register" / "registration_record.json").read_text())
    assert record["lineage"]["pipeline_run_id"] == run_dir.name
    blessing = json.loads((run_dir / "evaluate" / "blessing.json").read_text())
    assert blessing["blessed"] and "model blessed" in output
    report = json.loads((run_dir / "evaluate" / "evaluation" / "evaluation_report.json").read_text())
    assert report["thresholds_source"] == "given"
    champion = json.loads((run_dir / "resolve_champion" / "champion" / "champion.json").read_text())
    assert champion["found"] is False and "names no version" in champion["reason"]
    deployment = json.loads((run_dir / "deploy" / "deployment_record.json").read_text())
    assert deployment["outcome"] == "deployed"
    assert deployment["infra_validation"]["canary_sources"]["test_split"] == 8  # deploy.canary_count


def test_run_names_the_failed_node_and_its_log(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = run_pipeline(tmp_path / "empty", tmp_path / "runs")
    output = capsys.readouterr().out
    assert code == 1
    assert "node ingest failed" in output and "no image data found" in output
    assert "log.txt" in output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("monitor.window=1", "no node 'monitor'"),
        ("deploy.target=aws", "must be one of"),
        ("evaluate.challenger=model", "no settable input 'challenger'"),
        ("evaluate.thresholds=missing.json", "no such file or folder"),
        ("ingest.max_age_days=x", "not a valid integer"),
        ("oops", "NODE.PARAM"),
        ("colour=red", "no pipeline parameter 'colour'"),
        ("epochs=0", "epochs"),
    ],
)
def test_run_rejects_bad_overrides_before_running(tmp_path, png_dataset, capsys, override, message):
    code = run_pipeline(png_dataset, tmp_path / "runs", override)
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_pipeline_parameter_is_set_on_every_node_it_feeds():
    nodes = training_pipeline({"source_uri": "data"})
    values, rest = parameter_overrides(nodes, ["model_name=shop", "train.epochs=2"])
    bind_parameters(nodes, values)
    by_name = {node.name: node for node in nodes}
    assert rest == ["train.epochs=2"]
    champion, register = by_name["resolve_champion"], by_name["register"]
    assert champion.inputs["model_name"] == register.inputs["model_name"] == "shop"


def test_spec_paths_are_relative(tmp_path: Path):
    spec = load_spec("ingest")
    assert (spec["code"], spec["environment"]["build"]["path"]) == ("../..", "../environments/data")


def test_relative_paths_mean_the_callers_working_directory(ingested_by_the_cli):
    code, folder = ingested_by_the_cli
    assert code == 0 and (folder / "d" / "manifest.json").is_file() and (folder / "r.json").is_file()


def test_non_finite_numbers_are_refused(tmp_path, png_dataset, capsys):
    code = run_pipeline(png_dataset, tmp_path / "runs", "preprocess.validation_fraction=nan")
    assert code == 2 and "must be a finite number" in capsys.readouterr().err


@pytest.fixture
def in_process_champion(monkeypatch) -> None:
    """resolve_champion declared `local_in_process`, and no child process to fall back on."""
    from mnist_mlops.pipelines import local
    from mnist_mlops.ports import load_metadata

    declared = load_metadata("resolve_champion") | {"local_in_process": True}
    monkeypatch.setattr(
        local, "load_metadata", lambda name: declared if name == "resolve_champion" else load_metadata(name)
    )

    def no_child_process(*args, **kwargs):
        raise AssertionError("a local_in_process component was started as a command")

    monkeypatch.setattr(local, "run_component", no_child_process)


def resolve_in_process(tmp_path: Path, verbose: bool = False, **inputs) -> tuple[int, Path, Path]:
    from mnist_mlops.pipelines import local
    from mnist_mlops.pipelines.graph import Node

    node = Node("resolve_champion", "resolve_champion", {})
    champion, log = tmp_path / "run" / "resolve_champion" / "champion", tmp_path / "run" / "log.txt"
    inputs = {"registry": f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"} | inputs
    options = local.RunOptions(tracking=False, verbose=verbose)
    code = local._execute(node, inputs, {"champion": champion}, log, options, {})
    return code, champion, log


def test_a_local_in_process_component_runs_here_as_its_command_would(tmp_path, in_process_champion, capsys):
    code, champion, log = resolve_in_process(tmp_path)
    assert code == 0
    assert not contracts.read_json(champion / "champion.json", "champion_record")["found"]
    said = "champion: no champion: mnist-mlops@production names no version"
    assert said in log.read_text() and capsys.readouterr().out == ""  # its log, not the console

    resolve_in_process(tmp_path / "again", verbose=True)
    assert f"[resolve_champion] {said}" in capsys.readouterr().out


def test_a_local_in_process_component_fails_as_its_command_would(tmp_path, in_process_champion):
    code, champion, log = resolve_in_process(tmp_path, request_log=str(tmp_path / "missing"))
    assert code == 2 and not champion.exists()
    assert log.read_text() == f"error: request_log {tmp_path / 'missing'}: no such folder\n"

    code, champion, log = resolve_in_process(tmp_path, traffic_window=10)  # below the port's minimum
    expected = "error: mnist_mlops_resolve_champion: parameter traffic_window=10: below the minimum 100\n"
    assert code == 2 and not champion.exists() and log.read_text() == expected


def test_a_local_in_process_component_that_crashes_fails_its_node_not_the_runner(tmp_path):
    from mnist_mlops.pipelines import local

    (tmp_path / "a-file").write_text("not a folder")
    registry = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    log = tmp_path / "log.txt"
    outputs = {"champion": tmp_path / "a-file" / "champion"}  # cannot be created: the node crashes
    assert local._execute_in_process("resolve_champion", {"registry": registry}, outputs, log, {}) == 1
    assert log.read_text().startswith("Traceback (most recent call last):")


IN_PROCESS_STEP = """
import os, sys

def run_{name}(out, behaviour):
    os.makedirs(out)
    print("python sees", os.environ["NODE_RUN"])
    os.write(2, b"written from C\\n")  # below Python: the file descriptor itself
    os.environ.setdefault("SET_BY_STEP", "1")
    if behaviour == "exit":
        sys.exit(3)
"""


@pytest.mark.parametrize(("behaviour", "code"), [("return", 0), ("exit", 3)])
def test_a_local_in_process_step_gets_its_environment_and_log_and_leaves_the_runner_as_it_was(
    tmp_path, monkeypatch, capfd, behaviour, code
):
    from mnist_mlops import ports
    from mnist_mlops.pipelines import local

    name = f"fake_step_{behaviour}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "executor.py").write_text(IN_PROCESS_STEP.replace("{name}", name))
    monkeypatch.setattr(ports, "component_dir", lambda component: tmp_path / component)
    before = dict(os.environ)
    log, out = tmp_path / "log.txt", tmp_path / "out"
    ran = local._execute_in_process(
        name, {"behaviour": behaviour}, {"out": str(out)}, log, {"NODE_RUN": "r1"}
    )
    assert ran == code and dict(os.environ) == before
    assert log.read_text() == "python sees r1\nwritten from C\n"
    assert capfd.readouterr() == ("", "")  # nothing reached the runner's console
    assert out.exists() == (code == 0)  # a failed step leaves none of its outputs


def test_a_run_that_died_holding_the_runs_folder_is_closed_by_the_next(tmp_path, capsys):
    """Its run.json says failed (when it was last written) and its MLflow parent and node runs end
    KILLED; a run that finished, named in a lock file left by an older version, is left alone."""
    from mnist_mlops.pipelines.local import RunOptions, _holding, new_run_record
    from mnist_mlops.registry import client
    from mnist_mlops.step_cache import StepCache
    from mnist_mlops.tracking import PipelineRuns

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = PipelineRuns(registry, "mnist_mlops_training", "20261207-101010-killed", {})
    node = runs.start_node("train", "mnist_mlops_train", "k" * 64)
    killed, finished = (
        tmp_path / "runs" / "20261207-101010-killed",
        tmp_path / "runs" / "20261207-090909-done",
    )
    tracking = {"uri": registry, "experiment_id": runs.experiment_id, "run_id": runs.run_id}
    for folder, status in ((killed, "running"), (finished, "succeeded")):
        folder.mkdir(parents=True)
        done = {"status": status, "finished_at": "2026-12-07T09:10:00Z", "outcome": "deployed"}
        written = (
            new_run_record(folder.name) | {"tracking": tracking} | (done if status == "succeeded" else {})
        )
        (folder / "run.json").write_text(json.dumps(written))
    lock = tmp_path / "runs" / ".cache" / ".lock"
    lock.parent.mkdir()

    options = RunOptions(registry=registry)
    for left in (finished, killed):
        lock.write_text(f"run {left.name} (pid 1)\n")
        with _holding(StepCache(lock.parent), "20261207-111111-next", options):
            assert lock.read_text() == f"run 20261207-111111-next (pid {os.getpid()})\n"
        assert lock.read_text() == ""

    assert json.loads((finished / "run.json").read_text())["status"] == "succeeded"
    closed = contracts.read_json(killed / "run.json", "run_record")
    assert closed["status"] == "failed" and closed["finished_at"]
    assert closed["outcome"] == "interrupted before it finished; found by run 20261207-111111-next"
    assert f"run {killed.name} was interrupted before it finished" in capsys.readouterr().out
    store = client(registry)
    assert {store.get_run(run_id).info.status for run_id in (runs.run_id, node)} == {"KILLED"}
