"""The shared environment images build from their folders with no build args and run a component with
no network, only the code snapshot and its own folders mounted; the local runner's container isolation
uses them. The full Azure ML rehearsal is `tests/test_aml_rehearsal.py`.

Needs rootful podman (`../shared/containers/podman-here` installs it); CI runs these. Set
MNIST_MLOPS_SKIP_CONTAINER_TESTS=1 to leave them out on a machine without podman.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from mnist_mlops import containers, contracts
from mnist_mlops.environments import EXTRAS, environment_dir

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MNIST_MLOPS_SKIP_CONTAINER_TESTS") == "1", reason="MNIST_MLOPS_SKIP_CONTAINER_TESTS=1"
    ),
]


@pytest.fixture(scope="module")
def data_image(podman_images: str) -> str:
    return containers.build_image(environment_dir("data"))


def test_every_environment_image_is_pip_check_clean_and_runs_python_3_11(podman_images):
    for name in EXTRAS:
        tag = containers.build_image(environment_dir(name))
        checked = subprocess.run(
            [
                *containers.podman(),
                "run",
                "--rm",
                "--network",
                "none",
                tag,
                "sh",
                "-c",
                "pip check && python -V",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "No broken requirements found" in checked.stdout and "Python 3.11." in checked.stdout


def test_container_has_no_network_and_fails_cleanly_on_bad_data(tmp_path, data_image):
    interfaces = subprocess.run(
        [*containers.podman(), "run", "--rm", "--network", "none", data_image, "ls", "/sys/class/net"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert interfaces == ["lo"]
    (tmp_path / "empty").mkdir()
    result = containers.run_in_container(
        "ingest",
        data_image,
        {"source_data": tmp_path / "empty"},
        {"dataset": tmp_path / "out" / "dataset", "data_report": tmp_path / "out" / "report.json"},
    )
    assert result.returncode == 2 and "no image data found" in result.stderr
    assert not (tmp_path / "out" / "dataset").exists() and not (tmp_path / "out" / "report.json").exists()


def test_image_tags_follow_the_build_context_and_are_shared(tmp_path):
    data, model = environment_dir("data"), environment_dir("model")
    assert containers.image_tag(data) == containers.image_tag(data) != containers.image_tag(model)
    assert containers.environment_of("train") == containers.environment_of("deploy") == model
    changed = tmp_path / "data"
    changed.mkdir()
    for path in data.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    (changed / "requirements.txt").write_text("numpy==2.4.6\n")
    assert containers.image_tag(changed) != containers.image_tag(data)


def test_the_pipeline_runs_node_by_node_in_the_component_images(tmp_path, png_dataset, podman_images):
    from mnist_mlops.cli import main

    runs = tmp_path / "runs"
    argv = ["run", "--data", str(png_dataset), "--runs-dir", str(runs), "--until", "preprocess"]
    argv += ["--isolation", "container", "--set", "preprocess.validation_fraction=0.25"]
    assert main(argv) == 0
    (run_dir,) = [path for path in runs.iterdir() if path.name != ".cache"]
    record = contracts.read_json(run_dir / "run.json", "run_record")
    assert [(node["name"], node["status"]) for node in record["nodes"]] == [
        ("ingest", "done"),
        ("preprocess", "done"),
    ]
    manifest = json.loads((run_dir / "preprocess" / "preprocessed" / "manifest.json").read_text())
    assert manifest["validation_fraction"] == 0.25
    assert "/mnt/inputs/source_data" in (run_dir / "ingest" / "log.txt").read_text()
