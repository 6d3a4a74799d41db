"""The README's quick start is what CI runs: exactly two command lines, the second one in .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_has_two_single_line_commands():
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in command for command in commands)
    assert "mnist-mlops run" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    assert quick_start_commands()[1] in (REPO / ".ci" / "run").read_text().splitlines()
