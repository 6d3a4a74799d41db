"""Every benchmark's imports resolve: benchmarks run only on a quiet machine with the full data, so a
helper module or function renamed under them would otherwise be found there, not here (serve.py and
bad_input.py once imported a `measures` module that had become `common`)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def imported(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names taken from it) for every absolute import in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


@pytest.mark.parametrize("script", sorted(path.name for path in BENCHMARKS.glob("*.py")))
def test_every_module_and_name_a_benchmark_imports_exists(script, monkeypatch):
    """Found without running them (a benchmark imports TensorFlow): third-party modules by name, the
    project's own and the benchmarks' helpers down to each name taken from them."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for module, names in imported(ast.parse((BENCHMARKS / script).read_text())):
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{script} imports {module}, which is not there"
        if spec.origin is None or not Path(spec.origin).is_relative_to(REPO):
            continue
        defined = top_level_names(Path(spec.origin))
        missing = [
            name
            for name in names
            if name not in defined and importlib.util.find_spec(f"{module}.{name}") is None
        ]
        assert not missing, f"{script} imports {missing} from {module}, which has none"
