"""The imports run one way (issue 11): CLI on top, then pipelines, components, serving, the shared runtime
and the schemas; no component imports another. The rule on small made-up trees, then on the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlops import layers

TREE = {
    "mnist_mlops/__init__.py": "",
    "mnist_mlops/cli.py": "",
    "mnist_mlops/errors.py": "",
    "mnist_mlops/serving/__init__.py": "",
    "mnist_mlops/serving/server.py": "",
    "components/__init__.py": "",
    "components/ingest/__init__.py": "",
    "components/ingest/executor.py": "",
    "components/ingest/layouts.py": "",
    "components/train/__init__.py": "",
    "components/train/executor.py": "",
    "pipelines/__init__.py": "",
    "pipelines/graph.py": "",
    "schemas/__init__.py": "",
}
"""A made-up tree with every box; each case below writes some of its modules."""
FOLDERS = {
    "mnist_mlops": "mnist_mlops",
    "mnist_mlops.components": "components",
    "mnist_mlops.pipelines": "pipelines",
    "mnist_mlops.schemas": "schemas",
}

CASES = {
    "every layer importing downward, at any depth": (
        {
            "mnist_mlops/cli.py": "import mnist_mlops.pipelines.graph\n"
            "def serve():\n    from mnist_mlops.serving import server\n",
            "pipelines/graph.py": "def build():\n    from mnist_mlops.components.ingest import executor\n",
            "components/ingest/executor.py": "from .layouts import SPLITS\n"
            "from mnist_mlops.serving.server import main\nfrom mnist_mlops import errors\n",
            "components/ingest/__init__.py": "from mnist_mlops.components.ingest.executor import run\n",
            "mnist_mlops/serving/server.py": "from ..errors import UserInputError\n",
        },
        [],
    ),
    "the runtime importing a component at the top": (
        {"mnist_mlops/errors.py": "import os\nfrom mnist_mlops.components.ingest.executor import run\n"},
        [("mnist_mlops.errors", 2, "mnist_mlops.components.ingest.executor")],
    ),
    "the runtime importing the pipelines inside a function": (
        {"mnist_mlops/errors.py": "def fail():\n    if True:\n        import mnist_mlops.pipelines.graph\n"},
        [("mnist_mlops.errors", 3, "mnist_mlops.pipelines.graph")],
    ),
    "the runtime finding the components' folder by importing their package": (
        {"mnist_mlops/errors.py": "def folder():\n    import mnist_mlops.components as package\n"},
        [("mnist_mlops.errors", 2, "mnist_mlops.components")],
    ),
    "a component importing the pipelines in a method": (
        {
            "components/train/executor.py": "class T:\n    def f(self):\n"
            "        from mnist_mlops.pipelines import graph\n"
        },
        [("mnist_mlops.components.train.executor", 3, "mnist_mlops.pipelines.graph")],
    ),
    "a component importing another one, relatively": (
        {"components/train/executor.py": "from ..ingest.layouts import SPLITS\n"},
        [("mnist_mlops.components.train.executor", 1, "mnist_mlops.components.ingest.layouts")],
    ),
    "a component importing the package that gathers them all": (
        {"components/train/executor.py": "import mnist_mlops.components\n"},
        [("mnist_mlops.components.train.executor", 1, "mnist_mlops.components")],
    ),
    "serving importing a component": (
        {"mnist_mlops/serving/server.py": "from mnist_mlops.components.ingest import executor\n"},
        [("mnist_mlops.serving.server", 1, "mnist_mlops.components.ingest.executor")],
    ),
    "the schemas importing the runtime": (
        {"schemas/__init__.py": "from mnist_mlops import errors\n"},
        [("mnist_mlops.schemas", 1, "mnist_mlops.errors")],
    ),
    "the CLI imported by the pipelines": (
        {"pipelines/graph.py": "from mnist_mlops.cli import main\n"},
        [("mnist_mlops.pipelines.graph", 1, "mnist_mlops.cli")],
    ),
    "an upward import for type checking only": (
        {
            "mnist_mlops/errors.py": "import typing\nif typing.TYPE_CHECKING:\n"
            "    from mnist_mlops.pipelines.graph import Graph\nelse:\n    import mnist_mlops.cli\n"
        },
        [
            ("mnist_mlops.errors", 3, "mnist_mlops.pipelines.graph (TYPE_CHECKING)"),
            ("mnist_mlops.errors", 5, "mnist_mlops.cli:"),
        ],
    ),
    "a module named in a string, resolved at run time": (
        {
            "mnist_mlops/errors.py": "import importlib\n"
            "importlib.import_module('mnist_mlops.pipelines.graph')\n"
        },
        [],
    ),
    "a component's tests, which ship nowhere": (
        {"components/train/tests/test_train.py": "from mnist_mlops.pipelines import graph\n"},
        [],
    ),
}


def write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, source in {**TREE, **files}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(source)
    return {package: root / folder for package, folder in FOLDERS.items()}


@pytest.mark.parametrize("case", CASES)
def test_an_import_against_the_order_is_named(case, tmp_path):
    files, expected = CASES[case]
    found = list(layers.violations(layers.read_imports(write_tree(tmp_path, files))).values())
    assert len(found) == len(expected), found
    for (module, line, target), message in zip(expected, found, strict=True):
        assert f"{module} line {line} imports {target}" in message


def test_every_box_has_a_layer():
    assert sorted(set(layers.BOXES.values())) == sorted(layers.LAYERS)


def test_the_picture_counts_importing_modules_and_marks_what_runs_against_the_order(tmp_path):
    folders = write_tree(
        tmp_path,
        {
            "components/ingest/executor.py": "from mnist_mlops import errors\n"
            "from mnist_mlops.errors import E\n",
            "components/train/executor.py": "from mnist_mlops.errors import E\n",
            "pipelines/graph.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from mnist_mlops.serving.server import Server\n",
            "mnist_mlops/errors.py": "def f():\n    from mnist_mlops.cli import main\n",
        },
    )
    picture = layers.flowchart(layers.read_imports(folders), folders).splitlines()
    assert picture[0] == "flowchart TD"
    assert '    components["components<br/>components/"]' in picture
    assert '    cli["cli<br/>mnist_mlops/cli.py"]' in picture
    assert "    components -->|2| runtime" in picture
    assert "    pipelines -.->|1| serving" in picture
    assert "    runtime -->|1 upward| cli" in picture
    edges = [line for line in picture if "->|" in line]
    assert (
        picture[-1] == f"    linkStyle {edges.index('    runtime -->|1 upward| cli')} stroke:#d00,color:#d00"
    )


def test_the_readme_block_is_replaced_between_its_markers_and_they_must_be_there(tmp_path):
    folders = write_tree(tmp_path, {})
    text = f"# x\n\n{layers.README_START}\nstale\n{layers.README_END}\n\nrest\n"
    rendered = layers.render_readme(text, folders)
    assert rendered.startswith(f"# x\n\n{layers.README_START}\n") and rendered.endswith(
        f"\n```\n{layers.README_END}\n\nrest\n"
    )
    assert "stale" not in rendered and "flowchart TD" in rendered
    with pytest.raises(ValueError, match="markers"):
        layers.render_readme("# x\n", folders)


def test_specs_draws_the_picture_into_the_readme_of_a_checkout_only(tmp_path, monkeypatch):
    """A code snapshot has the package's folders and no README.md: nothing to draw into, no error."""
    (readme,) = layers.generated_files()
    assert readme.name == "README.md" and layers.README_START in layers.generated_files()[readme]
    monkeypatch.setattr(layers, "source_root", lambda: tmp_path)
    assert layers.generated_files() == {}


def test_the_package_imports_run_one_way():
    imports = layers.read_imports(layers.source_folders())
    assert {found.module for found in imports} >= {"mnist_mlops.cli", "mnist_mlops.pipelines.local"}
    against = list(layers.violations(imports).values())
    assert not against, "imports against the layer order:\n" + "\n".join(against)
