"""batch_score against a tiny registered model: rows, skipped files, summary contract, resume after a
real kill, workers through the component command, labels from class folders, and refusals."""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import cli, contracts
from mnist_mlops.components.batch_score import executor
from mnist_mlops.components.batch_score.executor import MiniBatch, run_batch_score, score_mini_batch, work_dir
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.errors import UserInputError
from mnist_mlops.imaging import decode_pngs
from mnist_mlops.model_interface import MNIST
from mnist_mlops.serving.scorer import LoadedModel, RegistryModels
from mnist_mlops.serving.validation import png_bomb
from tests.datasets import digit_images, make_tarball, png_bytes
from tests.models import ANY_MODEL, judged_model, register_model

pytestmark = pytest.mark.slow  # trains models or starts servers

MODEL = "models:/mnist-mlops@challenger"
MINI_BATCH = 8


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registry holding one ready version of a tiny model (quality is beside the point here)."""
    root = judged_model(
        tmp_path_factory.mktemp("batch-score-model"),
        ANY_MODEL,
        train_per_class=12,
        test_per_class=4,
        epochs=2,
    )
    uri = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    register_model(root, uri, root / "registration.json")
    return uri


BAD = {
    "bad/notes.txt": (b"not an image at all", "not a PNG file"),
    "bad/empty.png": (b"", "empty input"),
    "bad/truncated.png": (png_bytes(np.zeros((28, 28), np.uint8))[:40], "truncated"),
    "bad/too_big.png": (png_bytes(np.zeros((64, 64), np.uint8)), "wrong size 64x64"),
    "bad/bomb.png": (png_bomb(4000), "wrong size 4000x4000"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int | None]]:
    """A tarball of good PNGs (labelled by folder, unlabelled, RGB, an awkward name) and bad files;
    returns it with the good paths and their labels."""
    root = tmp_path_factory.mktemp("batch-score-images") / "images"
    pixels, labels = digit_images(per_class=3, seed=7)
    good: dict[str, bytes] = {
        f"digits/{label}/{index}.png": png_bytes(image)
        for index, (image, label) in enumerate(zip(pixels, labels, strict=True))
    }
    good["unlabelled/a.png"] = png_bytes(pixels[0])
    good['odd/comma, "quote".png'] = png_bytes(pixels[1])
    good["rgb/4/colour.png"] = png_bytes(pixels[13], mode="RGB")
    for path, data in {**good, **{path: data for path, (data, _) in BAD.items()}}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    tarball = make_tarball(root, root.parent / "images.tar.gz")
    return tarball, {path: int(path.split("/")[1]) if path.count("/") == 2 else None for path in good}


@pytest.fixture(scope="module")
def scored(
    registry: str, images: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    """One uninterrupted in-process run: its summary and predictions file."""
    out = tmp_path_factory.mktemp("batch-score-run")
    summary = run_batch_score(
        MODEL,
        images[0],
        out / "predictions.csv",
        out / "summary.json",
        registry=registry,
        mini_batch_size=MINI_BATCH,
    )
    return summary, out / "predictions.csv"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_scores_every_good_file_once_and_reports_the_bad_ones(registry, images, scored):
    tarball, good = images
    summary, predictions = scored
    rows = read_rows(predictions)
    assert [row["path"] for row in rows] == sorted(good)
    assert {row["path"]: row["expected"] for row in rows} == {
        path: "" if label is None else str(label) for path, label in good.items()
    }
    assert all(row["label"] == MNIST_CLASSES[int(row["class"])] for row in rows)
    assert all(0.0 < float(row["confidence"]) <= 1.0 for row in rows)
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert set(reasons) == set(BAD)
    for path, (_, reason) in BAD.items():
        assert reason in reasons[path], path

    assert contracts.read_json(predictions.with_name("summary.json"), "batch_score_summary") == summary
    assert (summary["files"], summary["scored"], summary["skipped_count"]) == (
        len(good) + len(BAD),
        len(good),
        5,
    )
    assert summary["model_version"] == "1" and summary["model_uri"] == MODEL
    assert (summary["mini_batches"], summary["resumed_mini_batches"]) == (
        -(-summary["files"] // MINI_BATCH),
        0,
    )
    classes = [int(row["class"]) for row in rows]
    assert summary["class_distribution"] == {str(c): classes.count(c) for c in range(10)}
    labelled = [(int(row["class"]), int(row["expected"])) for row in rows if row["expected"]]
    assert summary["labelled"] == len(labelled) == 31
    assert summary["accuracy"] == round(np.mean([c == label for c, label in labelled]), 6)
    assert summary["images_per_s"] > 0 and not work_dir(predictions).exists()

    models = RegistryModels("models:/mnist-mlops/1", registry)
    blobs = [(tarball.parent / "images" / path).read_bytes() for path in sorted(good)]
    expected = models.load("1").predict(decode_pngs(blobs, MNIST_IMAGE_SHAPE).images).argmax(axis=1)
    assert classes == expected.tolist()  # the registered model's own answers, row for row


def test_a_killed_run_resumes_with_exactly_one_row_per_file(registry, images, scored, tmp_path, capfd):
    """SIGKILL right after the first checkpoint (no cleanup runs), then the same command again, through
    the component's own command line and with two worker processes."""
    predictions, summary_path = tmp_path / "predictions.csv", tmp_path / "summary.json"
    killer = textwrap.dedent(
        f"""
        import os, signal
        from mnist_mlops.components.batch_score import executor
        write_part = executor._write_part
        def write_then_die(*args):
            write_part(*args)
            os.kill(os.getpid(), signal.SIGKILL)
        executor._write_part = write_then_die
        executor.run_batch_score(
            {MODEL!r}, {str(images[0])!r}, {str(predictions)!r}, {str(summary_path)!r},
            registry={registry!r}, mini_batch_size={MINI_BATCH},
        )
        """
    )
    killed = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    parts = work_dir(predictions)
    assert sorted(path.name for path in parts.iterdir()) == ["000000.json", "run.json"]
    assert not predictions.exists() and not summary_path.exists()

    arguments = ["batch_score", "--images", str(images[0]), "--model", MODEL, "--registry", registry]
    arguments += ["--mini-batch-size", str(MINI_BATCH), "--workers", "2"]
    assert cli.main([*arguments, "--predictions", str(predictions), "--summary", str(summary_path)]) == 0
    assert "1 already scored by an interrupted run" in capfd.readouterr().out
    resumed = contracts.read_json(summary_path, "batch_score_summary")
    assert (resumed["resumed_mini_batches"], resumed["workers"]) == (1, 2)
    assert predictions.read_bytes() == scored[1].read_bytes()
    ignore = {
        "seconds",
        "model_load_seconds",
        "images_per_s",
        "finished_at",
        "resumed_mini_batches",
        "workers",
    }
    assert {k: v for k, v in resumed.items() if k not in ignore} == {
        k: v for k, v in scored[0].items() if k not in ignore
    }
    assert not parts.exists()


def test_a_killed_worker_stops_the_run_naming_it_and_a_rerun_scores_the_rest(
    registry, images, scored, tmp_path, capfd
):
    """Two workers, each on its own CPUs and scoring through ONNX Runtime; the one that takes the second
    mini-batch is killed before it writes it (spawned workers run this script's top level too, so the
    patch reaches them). The run fails naming the worker; the rerun scores only what is missing."""
    predictions, summary_path = tmp_path / "predictions.csv", tmp_path / "summary.json"
    script = tmp_path / "kill_a_worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal
            from mnist_mlops.components.batch_score import executor
            write_part = executor._write_part
            def die_before_the_second(work, index, scored):
                if index == 1:
                    os.kill(os.getpid(), signal.SIGKILL)
                write_part(work, index, scored)
            executor._write_part = die_before_the_second
            if __name__ == "__main__":
                executor.run_batch_score(
                    {MODEL!r}, {str(images[0])!r}, {str(predictions)!r}, {str(summary_path)!r},
                    registry={registry!r}, mini_batch_size={MINI_BATCH}, workers=2,
                )
            """
        )
    )
    killed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 1
    assert "was killed by SIGKILL" in killed.stderr and "run the same command again" in killed.stderr
    # the killed worker's own line may die with it (a queue writes from a thread); the other's cannot
    shares = {
        f"{number}/2": ",".join(map(str, sorted(cpus)))
        for number, cpus in enumerate(executor.cpu_shares(2), 1)
    }
    ready = re.findall(r"^worker (\d/2) scores with (\w+) on CPUs ([\d,]+)$", killed.stdout, re.MULTILINE)
    assert ready and all(runtime == "onnxruntime" and shares[name] == cpus for name, runtime, cpus in ready)
    # the run stops at once: the other worker may have scored any of the rest, or none (still loading)
    left = {path.name for path in work_dir(predictions).iterdir()} - {"run.json"}
    assert "000001.json" not in left
    assert not predictions.exists() and not summary_path.exists()

    resumed = run_batch_score(
        MODEL, images[0], predictions, summary_path, registry=registry, mini_batch_size=MINI_BATCH
    )
    if left:
        assert f"({len(left)} already scored by an interrupted run" in capfd.readouterr().out
    assert resumed["resumed_mini_batches"] == len(left) < resumed["mini_batches"]
    assert predictions.read_bytes() == scored[1].read_bytes()


def test_refusals_are_clear_and_write_nothing(registry, images, tmp_path):
    outputs = (tmp_path / "predictions.csv", tmp_path / "summary.json")
    refusals = [
        ("./model", images[0], registry, "batch_score takes a registry reference"),
        ("models:/mnist-mlops/7", images[0], registry, "not found in the registry"),
        (MODEL, images[0], f"sqlite:///{tmp_path / 'none.db'}", "no registry at"),
        (MODEL, tmp_path / "missing", registry, "no such file or folder"),
    ]
    for model, source, uri, message in refusals:
        with pytest.raises(UserInputError, match=message):
            run_batch_score(model, source, *outputs, registry=uri)
    with pytest.raises(UserInputError, match="parameter labels='digits': must be one of auto, folders, none"):
        run_batch_score(MODEL, images[0], *outputs, registry=registry, labels="digits")
    assert sorted(tmp_path.iterdir()) == []


def test_an_empty_input_exits_2_through_the_component(registry, tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    predictions, summary = tmp_path / "out" / "predictions.csv", tmp_path / "out" / "summary.json"
    arguments = ["batch_score", "--images", str(tmp_path / "empty"), "--model", MODEL, "--registry", registry]
    assert cli.main([*arguments, "--predictions", str(predictions), "--summary", str(summary)]) == 2
    assert "no files to score (empty input)" in capfd.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_mini_batch_rows_are_valid_csv_with_optional_labels():
    model = LoadedModel(
        "fake", "1", lambda images: np.eye(10, dtype=np.float32)[np.full(len(images), 7)], MNIST
    )
    image = png_bytes(np.zeros((28, 28), np.uint8))
    paths = ["3/a.png", 'x/with, "comma".png', "12/b.png", "9/broken.png"]
    scored = score_mini_batch(model, paths, [image, image, image, b"\x89PNG\r\n"], [3, None, None, 9])
    rows = list(csv.reader(io.StringIO(scored.rows)))
    assert rows == [
        ["3/a.png", "7", "7", "1.000000", "3"],
        ['x/with, "comma".png', "7", "7", "1.000000", ""],
        ["12/b.png", "7", "7", "1.000000", ""],
    ]
    assert scored.skipped == [{"path": "9/broken.png", "reason": "truncated PNG header"}]
    assert (scored.files, scored.labelled, scored.correct, scored.class_counts[7]) == (4, 1, 0, 3)


def test_a_checkpoint_only_resumes_the_same_job(tmp_path):
    """Another input, model version or mini-batch size starts over; a damaged part is scored again."""
    work = tmp_path / "predictions.csv.parts"
    batches = [MiniBatch(["a", "b"], [b"", b""], [None, None]), MiniBatch(["c"], [b""], [None])]
    identity = {"input_sha256": "1" * 64, "model_version": "1", "mini_batch_size": 2}
    assert executor._prepare(work, identity, batches) == set()
    part = executor.ScoredMiniBatch(
        files=2, rows="", skipped=[], class_counts=[0] * 10, labelled=0, correct=0
    )
    executor._write_part(work, 0, part)
    (work / "000001.json").write_text('{"files": 1, "rows": ')  # torn
    assert executor._prepare(work, identity, batches) == {0}
    assert executor._prepare(work, identity | {"model_version": "2"}, batches) == set()
    assert sorted(path.name for path in work.iterdir()) == ["run.json"]


def test_numeric_folders_that_are_no_classes_are_scored_unlabelled_unless_labels_are_required(
    registry, tmp_path
):
    """An MNIST model on `testing/0..9/` and on months `incoming/2024/1..12/`: auto labels the digits
    only, none labels nothing, folders refuses months 10-12 (classes the model was not trained for)."""
    pixels, labels = digit_images(per_class=2, seed=3)
    files = {
        f"testing/{label}/{index}.png": png_bytes(image)
        for index, (image, label) in enumerate(zip(pixels, labels, strict=True))
    }
    files |= {f"incoming/2024/{month}/x.png": png_bytes(pixels[month]) for month in range(1, 13)}
    for path, data in files.items():
        (tmp_path / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / path).write_bytes(data)

    def score(labels: str) -> tuple[dict, list[dict[str, str]]]:
        out = tmp_path / labels
        summary = run_batch_score(
            MODEL,
            tmp_path / "images",
            out / "predictions.csv",
            out / "summary.json",
            registry=registry,
            labels=labels,
        )
        return summary, read_rows(out / "predictions.csv")

    auto, auto_rows = score("auto")
    assert {row["path"]: row["expected"] for row in auto_rows} == {
        path: path.split("/")[1] if path.startswith("testing/") else "" for path in sorted(files)
    }
    digits = [row for row in auto_rows if row["expected"]]
    assert (auto["labels"], auto["labelled"], auto["scored"]) == ("auto", 20, 32)
    assert auto["accuracy"] == round(np.mean([row["label"] == row["expected"] for row in digits]), 6)

    unlabelled, rows = score("none")
    assert (unlabelled["labelled"], unlabelled["accuracy"]) == (0, None)
    assert [row["class"] for row in rows] == [row["class"] for row in auto_rows]
    assert not any(row["expected"] for row in rows)

    with pytest.raises(UserInputError) as refused:
        score("folders")
    assert "the folders incoming/2024/10, incoming/2024/11, incoming/2024/12 name no class" in str(
        refused.value
    )
    assert not (tmp_path / "folders").exists()
