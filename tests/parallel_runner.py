"""A stand-in for Azure ML's parallel runner, as far as an entry script can tell, driven by a parallel
spec.yaml: the spec's `input_data` folder listed and cut into mini-batches of `mini_batch_size` file
paths; `processes` spawned processes (a node's `max_concurrency_per_instance`), each importing the
`entry_script` by path from the code folder with the spec's `program_arguments` as its argv, calling
`init()` once and then `run(mini_batch)` on mini-batches pulled from one queue, and `shutdown()` at the
end; every element `run` returns appended as one line to the `append_row_to` output as its mini-batch
finishes; the files a mini-batch got no element back for counted against `error_threshold`.

Not the runner's: retries, timeouts, nodes, its own log folders and progress files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import multiprocessing
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.(\w+)\}\}")


@dataclasses.dataclass
class ParallelRun:
    """What the stand-in observed: per process, its init() calls and the mini-batches it ran."""

    inits: dict[int, int] = dataclasses.field(default_factory=dict)
    mini_batches: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    failed_files: int = 0


def run_parallel(
    spec_path: Path,
    code: Path,
    inputs: dict[str, Any],
    outputs: dict[str, Path],
    *,
    processes: int = 2,
    mini_batch_size: int | None = None,
) -> ParallelRun:
    """Run the parallel spec's entry script over its input data; raise if failed files exceed the
    spec's error_threshold (-1: never)."""
    spec = yaml.safe_load(spec_path.read_text())
    values = {
        "inputs": {k: str(v) for k, v in inputs.items()},
        "outputs": {k: str(v) for k, v in outputs.items()},
    }

    def bound(text: str) -> str:
        return PLACEHOLDER.sub(lambda match: values[match[1]][match[2]], text)

    task = spec["task"]
    argv = [str(code / task["entry_script"]), *bound(task["program_arguments"]).split()]
    data = Path(bound(spec["input_data"]))
    files = sorted(str(path) for path in data.rglob("*") if path.is_file())
    size = mini_batch_size or int(spec["mini_batch_size"])
    batches = [files[start : start + size] for start in range(0, len(files), size)]
    rows_file = Path(bound(task["append_row_to"]))
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    for index, batch in enumerate(batches):
        tasks.put((index, batch))
    for _ in range(processes):
        tasks.put(None)
    workers = [
        context.Process(target=_process, args=(argv, str(code), tasks, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    observed = ParallelRun()
    finished = 0
    with rows_file.open("a", encoding="utf-8", newline="") as appended:
        while finished < processes:
            kind, pid, payload = results.get(timeout=300)
            if kind == "init":
                observed.inits[pid] = observed.inits.get(pid, 0) + 1
            elif kind == "ran":
                index, rows = payload
                observed.mini_batches.setdefault(pid, []).append(index)
                observed.failed_files += len(batches[index]) - len(rows)
                appended.writelines(f"{row}\n" for row in rows)
            elif kind == "error":
                raise RuntimeError(f"process {pid}: {payload}")
            else:
                finished += 1
    for worker in workers:
        worker.join()
    threshold = int(spec.get("error_threshold", -1))
    if threshold != -1 and observed.failed_files > threshold:
        raise RuntimeError(f"{observed.failed_files} failed files exceed error_threshold {threshold}")
    return observed


def _process(argv: list[str], code: str, tasks: Any, results: Any) -> None:
    try:
        os.chdir(code)  # the job's working directory is the code snapshot
        sys.path.insert(0, code)
        sys.argv = argv
        loader = importlib.util.spec_from_file_location("entry_script", argv[0])
        entry = importlib.util.module_from_spec(loader)
        sys.modules[loader.name] = entry  # imported, as the runner imports it (dataclasses look it up)
        loader.loader.exec_module(entry)
        entry.init()
        results.put(("init", os.getpid(), None))
        while (item := tasks.get()) is not None:
            index, batch = item
            results.put(("ran", os.getpid(), (index, list(entry.run(batch)))))
        entry.shutdown()
        results.put(("done", os.getpid(), None))
    except Exception as error:  # reported to the parent, which fails the run
        results.put(("error", os.getpid(), f"{type(error).__name__}: {error}"))


def main() -> None:
    """`python parallel_runner.py SPEC CODE INPUTS_JSON OUTPUTS_JSON PROCESSES MINI_BATCH_SIZE`:
    `run_parallel` in a process of its own (inside a component image); prints what it observed as JSON."""
    spec, code, inputs, outputs, processes, mini_batch_size = sys.argv[1:]
    observed = run_parallel(
        Path(spec),
        Path(code),
        json.loads(inputs),
        {port: Path(path) for port, path in json.loads(outputs).items()},
        processes=int(processes),
        mini_batch_size=int(mini_batch_size),
    )
    print(json.dumps(dataclasses.asdict(observed)))


if __name__ == "__main__":
    main()
