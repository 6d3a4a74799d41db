"""Benchmark: `mnist-mlops run` killed with SIGKILL anywhere, then run again, on a small data set.

    python benchmarks/crash.py [--trials 20] [--seed 0] [--nodes register,deploy] [--max-minutes M]
        [--workdir DIR]

A first run that never crashes is the reference: its outputs' deterministic content
(`tests/crash_trials.fingerprint`) and each node's duration. Then `--trials` trials spread over the
nodes (a share for each, the rest to register and deploy, where the registry is written): each kills
the whole process group of a run some time into its node, a time drawn from the seed between 0 and the
node's reference duration, then runs the pipeline again plainly and checks it (`crash_trials.check`:
same deterministic outputs, complete cache entries, no version ready that was not verified and none
left half-registered, `production` on a ready version and agreeing with the deployment history, no
staged output and no scoring server left behind). A trial fails when its rerun fails or a check does.
Scoring servers a kill orphaned are stopped after their trial.

`--max-minutes` bounds the time on a loaded machine: no trial starts that would end after it, at the
pace of the trials so far (`trials` then counts those run, `trials_planned` the ones asked for).

The last line printed is the JSON summary: trials, failures, nodes_killed (the nodes the kills landed
in, with counts), and the trials' details.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the small data and the trials

from tests.crash_trials import Workspace, check, fingerprint, kill_inside, servers_of
from tests.datasets import small_splits, write_png_tree
from tests.models import LENIENT

SETTINGS = ["train.epochs=8", "train.batch_size=16", "deploy.canary_count=8", "deploy.max_canary_p99_ms=2000"]
"""The tests' small runs (tests/test_local_pipeline.py): 8 epochs on 120 images; a canary latency bound
a loaded machine meets (deploy's 50 ms is production's bar, not the point here)."""
REGISTRY_NODES = ("register", "deploy")


def trial_nodes(nodes: list[str], trials: int) -> list[str]:
    """Which node each trial kills: every node in turn, the registry writers twice as often."""
    weighted = nodes + [node for node in nodes if node in REGISTRY_NODES]
    return [weighted[index % len(weighted)] for index in range(trials)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nodes", default=None, help="comma-separated: kill only inside these (default: all)"
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="start no trial that would end later")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="kept afterwards (default: a temporary one)"
    )
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="crash-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    thresholds = root / "kpis.json"
    thresholds.write_text(json.dumps(LENIENT | {"min_accuracy": 0.3}))
    data = write_png_tree(root / "data", small_splits(train_per_class=12, test_per_class=4))
    workspace = Workspace.create(root, data, [*SETTINGS, f"evaluate.thresholds={thresholds}"])

    started = time.monotonic()
    code, run_dir, output = workspace.run()
    if code != 0 or run_dir is None:
        raise SystemExit(f"the reference run failed:\n{output[-3000:]}")
    reference = json.loads((run_dir / "run.json").read_text())
    reference_cache = root / "reference-cache"  # the trials' resets and reruns replace the runs' entries
    shutil.copytree(workspace.runs / ".cache", reference_cache, dirs_exist_ok=True)
    expected = fingerprint(run_dir)
    spans = {entry["name"]: entry["seconds"] for entry in reference["nodes"]}
    print(f"reference run {run_dir.name} in {time.monotonic() - started:.0f} s: {spans}", flush=True)

    chooser = random.Random(args.seed)
    details, landed = [], Counter()
    targets = args.nodes.split(",") if args.nodes else list(spans)
    planned = trial_nodes(targets, args.trials)
    trials_started = time.monotonic()
    for number, node in enumerate(planned, start=1):
        delay = round(chooser.uniform(0, spans[node]), 3)
        spent = time.monotonic() - started
        per_trial = (time.monotonic() - trials_started) / max(number - 1, 1)
        if args.max_minutes is not None and number > 1 and spent + per_trial > args.max_minutes * 60:
            print(f"time limit: {len(details)} of {len(planned)} trials in {spent / 60:.1f} min", flush=True)
            break
        trial = workspace.reset(reference, reference_cache, node)
        kill = kill_inside(trial, node, delay)
        landed[kill.node] += 1
        code, rerun, output = trial.run()
        if code != 0 or rerun is None:
            problems = [f"the rerun failed (exit {code}): {output.strip().splitlines()[-1:]}"]
        else:
            problems = check(trial, rerun, expected)
        for pid in servers_of(trial):  # orphans of the kill, counted by `check`: not the next trial's
            os.kill(pid, signal.SIGKILL)
        details.append(
            {"trial": number, "node": node, "delay_s": delay, "landed_in": kill.node, "problems": problems}
        )
        verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(
            f"trial {number}: kill {delay:.2f} s into {node} (landed in {kill.node}): {verdict}", flush=True
        )

    summary = {
        "trials": len(details),
        "failures": sum(bool(detail["problems"]) for detail in details),
        "nodes_killed": dict(sorted(landed.items())),
        "trials_planned": len(planned),
        "seed": args.seed,
        "reference_node_seconds": spans,
        "seconds": round(time.monotonic() - started, 1),
        "details": details,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
