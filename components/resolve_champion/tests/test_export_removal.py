"""resolve_champion hands evaluate the champion as train wrote it: without MLflow's download note and
register's scoring export, and with an error, not a quiet leftover, when the export cannot be removed
(a champion that kept it would never have its challenger's content, so every rerun would judge,
register and deploy again)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mnist_mlops.components.resolve_champion import executor
from mnist_mlops.onnx_export import EXPORT_FOLDER


@pytest.fixture
def registry_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry whose download is a model folder with MLflow's note and register's export."""

    def download_version(uri: str, name: str, version: str, destination: Path) -> Path:
        (destination / EXPORT_FOLDER).mkdir(parents=True)
        (destination / EXPORT_FOLDER / "model.onnx").write_bytes(b"onnx")
        for file_name in ("MLmodel", "registered_model_meta"):
            (destination / file_name).write_text(file_name)
        return destination

    monkeypatch.setattr(executor, "download_version", download_version)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # what the download sets, restored after the test


def test_the_champion_s_model_keeps_neither_the_download_note_nor_the_export(tmp_path, registry_download):
    executor._download("sqlite:///registry.db", "mnist-mlops", "3", tmp_path / "model")
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == ["MLmodel"]


def test_an_export_that_cannot_be_removed_is_an_error(tmp_path, registry_download, monkeypatch):
    def cannot_remove(path: Path, *args: object, **kwargs: object) -> None:
        if not kwargs.get("ignore_errors"):
            raise PermissionError(f"simulated: cannot remove {path}")

    monkeypatch.setattr(shutil, "rmtree", cannot_remove)
    with pytest.raises(PermissionError, match="simulated"):
        executor._download("sqlite:///registry.db", "mnist-mlops", "3", tmp_path / "model")
