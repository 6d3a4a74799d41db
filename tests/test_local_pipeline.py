"""The whole pipeline on a small data set, end to end: deploy, content-addressed cache, resume, --until.

Lenient KPI thresholds (a tiny model cannot reach production's) make the model blessed, so every run
goes from raw PNGs to a validated local deployment, as `mnist-mlops run` does on the full data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_mlops import contracts
from mnist_mlops.cli import main
from mnist_mlops.deployments import production_version
from mnist_mlops.registry import list_versions
from tests import models
from tests.datasets import small_splits, write_png_tree

pytestmark = pytest.mark.slow  # trains models or starts servers

LENIENT = models.LENIENT | {"min_accuracy": 0.3}


@pytest.fixture
def workspace(tmp_path: Path) -> dict:
    (tmp_path / "kpis.json").write_text(json.dumps(LENIENT))
    return {
        "data": write_png_tree(tmp_path / "data", small_splits(train_per_class=12, test_per_class=4)),
        "runs": tmp_path / "runs",
        "registry": f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}",
        "kpis": tmp_path / "kpis.json",
    }


def run(workspace: dict, *extra: str) -> tuple[int, dict]:
    argv = ["run", "--data", str(workspace["data"]), "--runs-dir", str(workspace["runs"])]
    argv += ["--registry", workspace["registry"], "--set", f"evaluate.thresholds={workspace['kpis']}"]
    argv += ["--set", "train.epochs=8", "--set", "train.batch_size=16", "--set", "deploy.canary_count=8"]
    before = set(workspace["runs"].iterdir()) if workspace["runs"].exists() else set()
    code = main([*argv, *extra])
    (new,) = set(workspace["runs"].iterdir()) - before - {workspace["runs"] / ".cache"}
    return code, contracts.read_json(new / "run.json", "run_record")


def statuses(record: dict) -> dict[str, str]:
    return {node["name"]: node["status"] for node in record["nodes"]}


def judged_against(workspace: dict, record: dict) -> dict | None:
    """The champion a run's evaluate judged its challenger against (None: there was none)."""
    report = workspace["runs"] / record["run_id"] / "evaluate" / "evaluation" / "evaluation_report.json"
    return contracts.read_json(report, "evaluation_report")["champion"]


def test_a_rerun_is_served_from_cache_and_a_changed_parameter_reruns_from_its_node(workspace, capsys):
    code, first = run(workspace)
    assert code == 0, capsys.readouterr().out
    assert set(statuses(first).values()) == {"done"}
    assert first["status"] == "succeeded" and first["lineage"]["deployed"] is True
    assert first["outcome"] == "deployed mnist-mlops v1"
    assert production_version(workspace["registry"], "mnist-mlops") == "1"
    capsys.readouterr()

    # the champion is now v1, this very model: nothing new to judge, so run 1's verdict stands
    code, again = run(workspace)
    assert code == 0
    assert statuses(again) == {name: "cached" for name in statuses(again)} | {"resolve_champion": "done"}
    assert len(list_versions(workspace["registry"], "mnist-mlops")) == 1  # nothing new registered
    assert production_version(workspace["registry"], "mnist-mlops") == "1"
    reason = "champion holds the same content as challenger: the result for this challenger stands"
    assert f"): {reason}" in capsys.readouterr().out
    assert again["outcome"] == (
        f"production stays at mnist-mlops v1, nothing new registered; evaluate reused: {reason}"
    )

    # and while production stays where it is, so does the champion: every node is served from the cache
    code, third = run(workspace)
    assert code == 0 and set(statuses(third).values()) == {"cached"}

    code, changed = run(workspace, "--set", "train.seed=7")
    assert code == 0
    assert statuses(changed) == {
        "ingest": "cached",
        "preprocess": "cached",
        "resolve_champion": "cached",  # production is still v1, as the registry confirms
        "train": "done",
        "evaluate": "done",
        "register": "done",
        "deploy": "done",
    }
    assert judged_against(workspace, changed)["uri"] == "models:/mnist-mlops/1"
    assert production_version(workspace["registry"], "mnist-mlops") == "2"

    # production moved to another model: run 1's challenger is judged again, against v2
    code, back = run(workspace, "--until", "evaluate")
    assert code == 0 and statuses(back)["train"] == "cached" and statuses(back)["evaluate"] == "done"
    assert judged_against(workspace, back)["uri"] == "models:/mnist-mlops/2"


def test_changed_data_content_at_the_same_path_is_never_served_from_cache(workspace):
    code, first = run(workspace, "--until", "preprocess")
    assert code == 0 and list(statuses(first)) == ["ingest", "preprocess"]
    write_png_tree(workspace["data"], small_splits(train_per_class=12, test_per_class=4, seed=5))
    code, second = run(workspace, "--until", "preprocess")
    assert code == 0 and statuses(second) == {"ingest": "done", "preprocess": "done"}
    assert first["lineage"]["dataset_version"] != second["lineage"]["dataset_version"]


def test_a_failed_node_leaves_nothing_cached_and_a_rerun_resumes_after_the_last_good_node(
    workspace, tmp_path
):
    (tmp_path / "broken.json").write_text('{"schema_version": 1, "min_accuracy": 2}')
    code, failed = run(
        workspace, "--until", "evaluate", "--set", f"evaluate.thresholds={tmp_path / 'broken.json'}"
    )
    assert code == 1 and failed["status"] == "failed"
    assert statuses(failed)["evaluate"] == "failed" and "evaluate failed" in failed["outcome"]
    run_dir = workspace["runs"] / failed["run_id"]
    assert not (run_dir / "evaluate" / "blessing.json").exists()

    code, resumed = run(workspace, "--until", "evaluate")
    assert code == 0
    assert statuses(resumed) == {
        "ingest": "cached",
        "preprocess": "cached",
        "resolve_champion": "cached",  # still no production version
        "train": "cached",
        "evaluate": "done",
    }


def test_no_cache_runs_every_node(workspace):
    run(workspace, "--until", "preprocess")
    code, fresh = run(workspace, "--until", "preprocess", "--no-cache")
    assert code == 0 and statuses(fresh) == {"ingest": "done", "preprocess": "done"}


def test_until_names_an_existing_node(workspace, capsys):
    assert main(["run", "--data", str(workspace["data"]), "--until", "monitor"]) == 2
    assert "no such node" in capsys.readouterr().err
