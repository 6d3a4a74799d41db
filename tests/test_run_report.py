"""The run report (`runs/<id>/report.html`) and the page builder under it: text stays text, nothing is
loaded from anywhere, the graph has every node with its status, parts a run never produced say why, a
writer error never fails a run, and `mnist-mlops report` refuses what is not a run folder it reads.

The fast tests read a run folder made here (a real ingest's data report, hand-written run.json and
blessing); the slow one opens the report of a real pipeline run in headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mnist_mlops import contracts, plots
from mnist_mlops.cli import main
from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.html_report import GraphNode, Markup, Section, element, graph, page, table
from mnist_mlops.pipelines.run_report import REPORT_FILE, report_finished_run, write_run_report
from tests.datasets import small_splits, write_png_tree
from tests.pages import ParsedPage, console_of, loads_nothing
from tests.run_folders import first_run_blessing

RUN_ID = "20261207-010203-abc123"
HOSTILE = "<script>alert('x')</script>"


def test_text_stays_text_and_only_markup_made_here_passes():
    cell = table(("class", "reason"), [(HOSTILE, Markup("<b>made here</b>"))])
    assert "<script>" not in cell and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in cell
    assert "<b>made here</b>" in cell
    assert 'title="&quot;&gt;&lt;script&gt;"' in element("span", "x", title='"><script>')
    document = page(HOSTILE, Markup(""), [Section(HOSTILE, [table(("a",), [(1.23456789,)])])])
    parsed = ParsedPage(document)
    assert loads_nothing(parsed) and "://" not in document
    assert "<td>1.235</td>" in document  # figures to four significant digits


def test_the_graph_has_a_box_per_node_and_an_arrow_per_edge():
    nodes = [
        GraphNode("ingest", "done", "1.0 s"),
        GraphNode("lookup", "cached", "cache hit"),
        GraphNode("train", "failed", "2.0 s"),
        GraphNode("deploy", "not run", ""),
    ]
    edges = [("ingest", "train"), ("lookup", "train"), ("train", "deploy"), ("ingest", "deploy"), ("x", "y")]
    svg = graph(nodes, edges)
    assert ParsedPage(svg).nodes == {
        "ingest": "done",
        "lookup": "cached",
        "train": "failed",
        "deploy": "not run",
    }
    assert svg.count('class="edge"') == 4  # an edge to a node not drawn is left out
    left = {name: float(x) for name, x in re.findall(r'data-node="(\w+)"[^>]*>.*?<rect x="([\d.]+)"', svg)}
    assert left["ingest"] < left["train"] < left["deploy"]  # each right of what it reads
    assert left["lookup"] == left["train"] - (left["deploy"] - left["train"])  # just left of its reader


@pytest.fixture(scope="module")
def data_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ingested")
    run_ingest(str(write_png_tree(root / "src", small_splits())), root / "dataset", root / "report.json")
    return root / "report.json"


def node(
    name: str, status: str, outputs: tuple[str, ...] = (), inputs: tuple[str, ...] = (), **extra
) -> dict:
    """A run.json entry as the runner writes it, its paths under where the run was started (elsewhere)."""
    where = f"/elsewhere/runs/{RUN_ID}"
    return {
        "name": name,
        "component": f"mnist_mlops_{name}",
        "component_version": "0.1.0",
        "status": status,
        "cache_key": "c" * 64,
        "seconds": 0.0 if status == "cached" else 1.5,
        "inputs": {
            Path(path).name.split(".")[0]: {"path": f"{where}/{path}", "sha256": "a" * 64} for path in inputs
        },
        "parameters": {},
        "outputs": {
            port.split(".")[0]: {"path": f"{where}/{name}/{port}", "sha256": "d" * 64} for port in outputs
        },
        "log": f"{where}/{name}/log.txt",
        **extra,
    }


def trial(number: int, learning_rate: float, score: float, *, chosen: bool) -> dict:
    """One trial of a sweep as run.json records it."""
    return {
        "name": f"train.trial-{number}",
        "parameters": {"learning_rate": learning_rate},
        "status": "done",
        "cache_key": str(number) * 64,
        "seconds": 3.0,
        "folder": f"runs/{RUN_ID}/train.trial-{number}",
        "objective": score,
        "chosen": chosen,
    }


@pytest.fixture
def failed_run(tmp_path: Path, data_report: Path) -> Path:
    """A run folder whose register failed: ingest's real data report, train's curves, evaluate's blessing
    (a reason holding a script) but no evaluation report, and deploy never reached."""
    folder = tmp_path / "runs" / RUN_ID
    (folder / "ingest").mkdir(parents=True)
    shutil.copyfile(data_report, folder / "ingest" / "data_report.json")
    history = [{"epoch": 1, "loss": 2.0, "accuracy": 0.3, "val_loss": 2.1, "val_accuracy": 0.2}]
    plots.training_curves(history, folder / "train" / "training_curves.png")
    dataset_version = json.loads(data_report.read_text())["dataset_version"]
    reasons = [f"accuracy 0.12 < 0.5 for class {HOSTILE}"]
    blessing = first_run_blessing(RUN_ID, dataset_version, blessed=False, reasons=reasons)
    contracts.write_json(folder / "evaluate" / "blessing.json", blessing, "blessing")
    record = {
        "schema_version": 1,
        "run_id": RUN_ID,
        "pipeline": "mnist_mlops_training",
        "started_at": "2026-12-07T01:02:03Z",
        "finished_at": "2026-12-07T01:05:00Z",
        "status": "failed",
        "nodes": [
            node("ingest", "done", ("data_report.json", "dataset")),
            node("preprocess", "done", ("preprocessed",), ("ingest/dataset",)),
            node("resolve_champion", "cached", ("champion",), reused_because="nothing changed"),
            node(
                "train",
                "done",
                ("model", "training_curves.png", "training_summary.json"),
                ("preprocess/preprocessed",),
                sweep={
                    "objective": {"metric": "val_accuracy", "goal": "maximize"},
                    "trials": [trial(1, 0.001, 0.25, chosen=False), trial(2, 0.01, 0.5, chosen=True)],
                    "chosen": "train.trial-2",
                },
            ),
            node(
                "evaluate",
                "done",
                ("evaluation", "blessing.json"),
                ("train/model", "preprocess/preprocessed", "resolve_champion/champion"),
            ),
            node("register", "failed", (), ("train/model", "evaluate/blessing.json")),
        ],
        "lineage": {"dataset_version": dataset_version, "model_version": None, "deployed": False},
        "outcome": f"register failed {HOSTILE}",
    }
    contracts.write_json(folder / "run.json", record, "run_record")
    return folder


def test_a_failed_run_shows_what_it_has_and_says_what_is_missing(failed_run):
    text = write_run_report(failed_run).read_text()
    parsed = ParsedPage(text)
    assert loads_nothing(parsed) and "://" not in text and HOSTILE not in text
    assert parsed.nodes == {
        "ingest": "done",
        "preprocess": "done",
        "resolve_champion": "cached",
        "train": "done",
        "evaluate": "done",
        "register": "failed",
        "deploy": "not run",  # the built-in graph's node the run never reached
    }
    assert text.count('class="edge"') == 9  # the run's own 7 edges and deploy's 2 from the built-in graph
    assert "every image decoded" in text  # the data report's checks
    assert text.count("data:image/png;base64,") == 1  # the curves; evaluate wrote no figures here
    assert "training_summary cannot be read" in text and "evaluation_report cannot be read" in text
    assert "accuracy 0.12 &lt; 0.5 for class &lt;script&gt;" in text
    assert "not available: register failed" in text
    assert "this run registered no model version" in text  # the lineage, without a registry to ask
    sweep = text[text.index("Sweep of train: maximize val_accuracy") :]
    for line in ("train.trial-1", "learning_rate=0.001", "train.trial-2", "learning_rate=0.01", "chosen"):
        assert line in sweep[: sweep.index("</table>")], line


def test_the_report_command_rewrites_a_run_folder_and_refuses_what_it_cannot_read(
    failed_run, tmp_path, capsys
):
    assert main(["report", str(failed_run)]) == 0
    assert capsys.readouterr().out.strip() == str(failed_run / REPORT_FILE)
    record = json.loads((failed_run / "run.json").read_text())
    (failed_run / "run.json").write_text(json.dumps(record | {"schema_version": 2}))
    assert main(["report", str(failed_run)]) == 2
    assert "run record schema_version 2" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a readable run record" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_never_fails_the_run(failed_run, capsys):
    (failed_run / REPORT_FILE).mkdir()  # nothing can be written there
    assert report_finished_run(failed_run) is None
    captured = capsys.readouterr()
    assert "warning: no run report" in captured.err and "run report:" not in captured.out


def test_a_run_that_fails_still_gets_its_report(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [
        "run",
        "--data",
        str(tmp_path / "empty"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--tracking",
        "off",
    ]
    assert main(argv) == 1
    (run_dir,) = [folder for folder in (tmp_path / "runs").iterdir() if folder.name != ".cache"]
    assert f"run report: {run_dir / REPORT_FILE}" in capsys.readouterr().out
    parsed = ParsedPage((run_dir / REPORT_FILE).read_text())
    assert parsed.nodes["ingest"] == "failed" and parsed.nodes["deploy"] == "not run"


@pytest.mark.usefixtures("rendered_page")  # installs Debian's chromium when it is missing
def test_the_console_check_catches_an_error(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><p>hi</p><script>throw new Error('deliberate')</script>")
    _, messages = console_of(broken, tmp_path / "profile")
    assert any("Uncaught Error: deliberate" in message for message in messages)


@pytest.mark.slow
@pytest.mark.usefixtures("rendered_page")
def test_the_report_of_a_real_run_renders_with_every_node_and_no_console_error(deployed_run, tmp_path):
    report = deployed_run.run_dir / REPORT_FILE  # written by the run itself
    dom, messages = console_of(report, tmp_path / "profile")
    assert messages == []
    parsed = ParsedPage(dom)
    assert parsed.nodes == {entry["name"]: entry["status"] for entry in deployed_run.record["nodes"]}
    assert loads_nothing(ParsedPage(report.read_text()))
    assert dom.count("data:image/png;base64,") == 3  # curves, confusion matrix, misclassified grid
    assert f"models:/{deployed_run.model}/1" in dom  # the lineage reached the registry
    assert f"{deployed_run.model} v1 is in production" in dom
