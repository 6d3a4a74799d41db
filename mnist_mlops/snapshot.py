"""How the project's code reaches an Azure ML job: as the job's code snapshot.

Every component spec says `code: ../..`, the root of the source tree, and runs its command there; what
azure-ai-ml uploads of it is decided by the root's `.amlignore` (its own ignore-file logic, applied
here through the SDK itself): `mnist_mlops/`, `components/`, `pipelines/`, `schemas/`, no tests. The
environment images hold third-party packages only and put the snapshot on `PYTHONPATH`.

Why this way rather than a wheel in the image or a package feed: every Azure ML entry point (`az ml
component create -f components/<c>/spec.yaml` from a clone, a designer upload of the repository,
`publish`, `submit`, `compile`'s YAML, schedules) uploads the spec's `code` folder anyway, so the code
arrives with no extra step and no index to trust; Azure ML keeps the snapshot with the job (code
lineage) and hashes it for reuse; and an environment changes only when the pins do, so it is built once
and shared by all the components that use it.

A source tree is a checkout (or a snapshot); an installed wheel has the same folders inside the
`mnist_mlops` package, and `materialize` writes them back out in the source tree's layout.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from mnist_mlops import SOURCE_TREE_SUBPACKAGES
from mnist_mlops.hashing import files_sha256

PACKAGE_ROOT = Path(__file__).resolve().parent
IGNORED_PARTS = {"tests", "__pycache__"}


def is_source_tree() -> bool:
    """True in a checkout or a code snapshot, False in an installed wheel."""
    return not (PACKAGE_ROOT / "components").is_dir() and (PACKAGE_ROOT.parent / "components").is_dir()


def source_root() -> Path:
    """The root of the source tree this code runs from (a checkout, or the job's snapshot)."""
    if not is_source_tree():
        raise RuntimeError(
            "mnist_mlops runs from an installed wheel here: use materialize() for a source tree"
        )
    return PACKAGE_ROOT.parent


def code_root() -> Path:
    """Where the components' `code` is: the source tree, or for an installed wheel a snapshot
    materialized once per version of the code under the user's cache folder."""
    if is_source_tree():
        return source_root()
    from mnist_mlops import __version__

    cache_home = Path(os.environ.get("MNIST_MLOPS_CACHE", Path.home() / ".cache" / "mnist-mlops"))
    root = cache_home / f"snapshot-{__version__}-{files_sha256(_installed_files())[:12]}"
    if not root.is_dir():
        from mnist_mlops.atomic import staged_dir

        with staged_dir(root) as stage:
            materialize(stage)
    return root


def snapshot_files(root: Path) -> dict[str, Path]:
    """What azure-ai-ml uploads as the code snapshot of `root`: relative path -> file, by its own rules
    (its ignore file, applied file by file through the SDK). Unlike the SDK's own walk, a folder that
    is excluded and that no `!` rule reaches into (.venv, node_modules, .git) is not entered: walking
    them took seconds of every compile and job image build, for files the SDK would drop anyway."""
    from azure.ai.ml._utils._asset_utils import traverse_directory
    from azure.ai.ml.entities._component.code import ComponentIgnoreFile

    ignore = ComponentIgnoreFile(root)
    reachable = _negated_top_folders(ignore._get_ignore_list())
    files: dict[str, Path] = {}
    for folder, subfolders, names in os.walk(root, followlinks=True):
        relative = Path(folder).relative_to(root)
        if reachable is not None:
            subfolders[:] = [
                name
                for name in subfolders
                if (relative / name).parts[0] in reachable or not ignore.is_file_excluded(Path(folder, name))
            ]
        prefix = Path("").joinpath(relative).as_posix()  # as get_upload_files_from_folder names them
        for absolute, name in traverse_directory(folder, names, prefix=prefix, ignore_file=ignore):
            files[name] = Path(absolute)
    return files


def _negated_top_folders(rules: list[str]) -> set[str] | None:
    """The top-level names the ignore file's `!` rules can bring back (`!/mnist_mlops/` -> mnist_mlops),
    or None when a `!` rule is not anchored to a literal top-level name and could reach anywhere."""
    reachable = set()
    for rule in (line.strip() for line in rules):
        if not rule.startswith("!"):
            continue
        top = rule.removeprefix("!/").split("/")[0]
        if not rule.startswith("!/") or not top or any(char in top for char in "*?[\\"):
            return None
        reachable.add(top)
    return reachable


def materialize(destination: Path, root: Path | None = None) -> Path:
    """Write the code snapshot (source tree layout) to `destination`: of the source tree `root`, else
    of this checkout or wheel."""
    if root is not None:
        files = snapshot_files(root)
    else:
        files = snapshot_files(source_root()) if is_source_tree() else _installed_files()
    return copy_files(files, destination)


def copy_files(files: dict[str, Path], destination: Path) -> Path:
    """Copy a {relative path: file} map into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    for relative, source in files.items():
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


def _installed_files() -> dict[str, Path]:
    """The installed package's files under their source tree paths (mnist_mlops/components -> components)."""
    files: dict[str, Path] = {}
    for subpackage in ("", *SOURCE_TREE_SUBPACKAGES):
        package = f"mnist_mlops.{subpackage}".rstrip(".")
        folder = Path(str(resources.files(package)))
        prefix = subpackage or "mnist_mlops"
        for path in folder.rglob("*"):
            relative = path.relative_to(folder)
            if not path.is_file() or IGNORED_PARTS & set(relative.parts):
                continue
            if not subpackage and relative.parts[0] in SOURCE_TREE_SUBPACKAGES:
                continue
            files[f"{prefix}/{relative.as_posix()}"] = path
    return files


def component_fingerprint(name: str, root: Path | None = None) -> str:
    """The one identity of a component's behaviour (step cache keys, publish versions), the same on any
    machine: its spec, the environment it builds, its own sources, the shared library, the components
    package and the schemas, by path in the source tree `root` (default `code_root()`). Tests, caches
    and documentation are left out."""
    import yaml

    root = root or code_root()
    folder = root / "components" / name
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    environment = (folder / spec["environment"]["build"]["path"]).resolve()
    files = [folder / "spec.yaml", *folder.rglob("*.py"), *environment.iterdir()]
    files += [root / "components" / "__init__.py", *(root / "schemas").glob("*.json")]
    files += (root / "mnist_mlops").rglob("*.py")
    labelled = {path.relative_to(root).as_posix(): path for path in files if path.is_file()}
    return files_sha256(
        {label: path for label, path in labelled.items() if IGNORED_PARTS.isdisjoint(label.split("/"))}
    )
