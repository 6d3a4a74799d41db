"""staged_dir: a failed stage leaves nothing behind, and its own error is the one raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlops.atomic import staged_dir


def test_a_failed_stage_leaves_no_folder_it_made(tmp_path):
    output = tmp_path / "made" / "output"
    with pytest.raises(RuntimeError, match="the step failed"), staged_dir(output) as stage:
        (stage / "part.npy").write_bytes(b"half")
        raise RuntimeError("the step failed")
    assert not any(tmp_path.iterdir())


def test_a_folder_that_cannot_be_removed_does_not_hide_the_error(tmp_path, monkeypatch):
    def refuse(folder: Path) -> None:
        raise PermissionError(f"{folder}: removal refused")

    monkeypatch.setattr(Path, "rmdir", refuse)  # a racing writer or permissions, as the cleanup meets them
    with pytest.raises(RuntimeError, match="the step failed"), staged_dir(tmp_path / "made" / "output"):
        raise RuntimeError("the step failed")
    assert (tmp_path / "made").is_dir()
