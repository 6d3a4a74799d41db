"""`mnist-mlops new-component NAME`: a working component folder, registered by being there.

It writes `components/<name>/` in this source tree: `component.py` (mldesigner ports over the
executor), `executor.py` (the framework-free `run_<name>`, checked against the spec, its output staged
and moved into place atomically), `metadata.yaml` (stability alpha, verified today: its tests pass as
written), `README.md`, `tests/`, and then the spec.yaml and the README's catalog line and ports table
that `mnist-mlops specs` keeps in step. The CLI subcommand, the spec tests, the
step cache, publish and the KFP and Azure ML renderers find a component by its folder in a source
tree, and a wheel carries it (setup.py finds its package, pyproject.toml globs its files). One edit
remains by hand: its node in `pipelines/graph.py` to put it in the training pipeline. The example body
summarizes an input folder; replace it, keeping the shape.
"""

from __future__ import annotations

import datetime
import keyword
import re
import shutil
from pathlib import Path

from mnist_mlops.errors import UserInputError

NAME = re.compile(r"[a-z][a-z0-9_]{1,39}")
ENVIRONMENTS = ("data", "model")

COMPONENT = '''"""The {name} component: typed ports over `executor.run_{name}`.

Deterministic: the same input folder and parameters give the same output, so a cached result may
stand in for a rerun.
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_{name}",
    version=VERSION,
    display_name="{title}",
    description="List the files of an input folder in summary.json (the skeleton's example body).",
    is_deterministic=True,
    tags={{"stage": "{name}", "project": "mnist-mlops"}},
    environment="../environments/{environment}/environment.yaml",
    code="../..",
)
def {name}(
    data: Input(type="uri_folder", description="The folder to summarize."),
    result: Output(type="uri_folder", description="summary.json: the files read and their count."),
    max_files: Input(
        type="integer", default=1000, min=1, max=1000000, description="Refuse a folder with more files."
    ) = 1000,
):
    from mnist_mlops.components.{name}.executor import run_{name}
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_{name}(data, result, max_files=max_files)
'''

EXECUTOR = '''"""{name}: the framework-free work behind the component. Parameters carry the port names, and
`checked` applies the spec's type and range checks whoever calls it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnist_mlops.atomic import staged_dir
from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import checked


@checked("{name}")
def run_{name}(data: str | Path, result: str | Path, *, max_files: int = 1000) -> dict[str, Any]:
    """Write `result/summary.json` listing the files of `data`; the folder appears only when complete."""
    source = Path(data)
    if not source.is_dir():
        raise UserInputError(f"{name}: input data {{source}} is not a folder")
    files = sorted(path.relative_to(source).as_posix() for path in source.rglob("*") if path.is_file())
    if len(files) > max_files:
        raise UserInputError(f"{name}: {{len(files)}} files in {{source}}, more than max_files={{max_files}}")
    summary = {{"files": files, "count": len(files)}}
    with staged_dir(Path(result)) as stage:
        (stage / "summary.json").write_text(json.dumps(summary, indent=2) + "\\n")
    return summary
'''

TEST = '''"""The {name} executor on a small folder, and bad input leaving nothing behind."""

from __future__ import annotations

import json

import pytest

from mnist_mlops.components.{name}.executor import run_{name}
from mnist_mlops.errors import UserInputError


def test_it_lists_the_files_of_the_folder(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text("a")
    (tmp_path / "in" / "sub" / "b.txt").write_text("b")
    run_{name}(tmp_path / "in", tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == {{"files": ["a.txt", "sub/b.txt"], "count": 2}}


def test_bad_input_names_the_problem_and_writes_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    with pytest.raises(UserInputError, match="max_files"):
        run_{name}(tmp_path / "in", tmp_path / "out", max_files=0)
    with pytest.raises(UserInputError, match="not a folder"):
        run_{name}(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
'''

METADATA = """stability: alpha
owners:
  - mnist-mlops maintainers
tags:
  - {environment}
last_verified: "{today}"
local_cache: content
"""

README = """# {title}

{catalog_start}
{catalog_end}

What it does, why it exists, and what it refuses: replace this paragraph.

{ports_start}
{ports_end}
"""


def new_component(name: str, environment: str = "data", reserved: frozenset[str] = frozenset()) -> Path:
    """Write the skeleton of component `name` in this source tree, with its spec; returns its folder.
    `reserved` are names taken already (the CLI's commands, whose subcommand a component becomes)."""
    from mnist_mlops import authoring
    from mnist_mlops.snapshot import source_root

    if not NAME.fullmatch(name):
        raise UserInputError(f"component name {name!r}: use lower_snake_case, 2 to 40 characters")
    if keyword.iskeyword(name) or name in reserved:
        raise UserInputError(f"component name {name!r} is taken (a Python keyword or a mnist-mlops command)")
    if environment not in ENVIRONMENTS:
        raise UserInputError(f"environment {environment!r}: one of {', '.join(ENVIRONMENTS)}")
    folder = source_root() / "components" / name
    if folder.exists():
        raise UserInputError(f"{folder} exists already")
    values = {
        "name": name,
        "title": name.replace("_", " ").capitalize(),
        "environment": environment,
        "today": datetime.date.today().isoformat(),
        "catalog_start": authoring.CATALOG_START,
        "catalog_end": authoring.CATALOG_END,
        "ports_start": authoring.PORTS_START,
        "ports_end": authoring.PORTS_END,
    }
    files = {
        "__init__.py": (
            f'"""{name}: `{name}` is the mldesigner component."""\n\n'
            f"from mnist_mlops.components.{name}.component import {name}\n\n"
            f'__all__ = ["{name}"]\n'
        ),
        "component.py": COMPONENT.format(**values),
        "executor.py": EXECUTOR.format(**values),
        "metadata.yaml": METADATA.format(**values),
        "README.md": README.format(**values),
        "tests/__init__.py": "",
        f"tests/test_{name}.py": TEST.format(**values),
    }
    try:
        for relative, text in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
        spec_text = authoring.render_spec(name)
        (folder / "spec.yaml").write_text(spec_text)
        import yaml

        (folder / "README.md").write_text(authoring.render_readme(name, yaml.safe_load(spec_text)))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-written
        raise
    return folder
