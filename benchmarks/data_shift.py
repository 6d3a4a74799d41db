"""The shifted-delivery incident on the shared MNIST: what `mnist-mlops run` does with each delivery.

    python benchmarks/data_shift.py [--tarball ../shared/data/mnist_png.tar.gz]

The shared MNIST is cut into two deliveries from the original source (each half of the training and of
the test images) and one from a changed source (the second half through another intensity response: low
contrast on grey). In a fresh working directory (its own ./runs, ./mlflow.db and serving state), as a user
would, with default settings:
1. `run` on the first original delivery: deployed as v1;
2. clients send original digits through the real scoring server following @production (request log);
3. `run` on the shifted delivery: not deployed, the reasons name the shift;
4. `run` on the second original delivery: promoted as before;
5. `run` on the shifted delivery with `--set evaluate.accept_data_shift=true`: deployed, the decision kept;
6. clients keep sending original digits; `monitor` (baseline: the serving model's own training data, from
   the registry) alerts and names the accepted shift.
The last line printed is the JSON summary (each outcome, the shift figures, the accuracies).
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_TARBALL

IDX_NAMES = {
    "training": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "testing": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLIENT_IMAGES = 500
MNIST_MLOPS = [sys.executable, "-m", "mnist_mlops.cli"]
REQUEST_LOG = "deployments/requests/mnist-mlops"
"""Where `serve` logs requests for a registry in the working directory (`deployments.request_log_dir`)."""


def changed_source(images: np.ndarray) -> np.ndarray:
    return ((images * 0.4) + 120).astype(np.uint8)


def write_delivery(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A delivery in MNIST's original IDX format (one of the layouts ingest reads)."""
    folder.mkdir(parents=True)
    for split, (images, labels) in splits.items():
        images_name, labels_name = IDX_NAMES[split]
        header = struct.pack(">HBBIII", 0, 0x08, 3, *images.shape)
        (folder / images_name).write_bytes(gzip.compress(header + images.tobytes(), compresslevel=1))
        header = struct.pack(">HBBI", 0, 0x08, 1, len(labels))
        (folder / labels_name).write_bytes(gzip.compress(header + labels.tobytes(), compresslevel=1))
    return folder


def deliveries(tarball: Path, workdir: Path) -> tuple[dict[str, Path], np.ndarray]:
    """The three deliveries and the clients' images (original digits none of them holds)."""
    from mnist_mlops import contracts
    from mnist_mlops.components.ingest.executor import run_ingest
    from mnist_mlops.dataset import load_split

    run_ingest(str(tarball), workdir / "whole", workdir / "whole.json")
    manifest = contracts.read_json(workdir / "whole" / "manifest.json", "dataset_manifest")
    halves: list[dict] = [{}, {}]
    rng = np.random.default_rng(0)
    for split in ("training", "testing"):
        images, labels = load_split(workdir / "whole", manifest, split)
        order = rng.permutation(len(images))
        for index, rows in enumerate(np.array_split(order, 2)):
            halves[index][split] = (images[np.sort(rows)], labels[np.sort(rows)])
    test_images = halves[1]["testing"][0]  # in label order, as the tarball's folders are
    clients = test_images[rng.choice(len(test_images), CLIENT_IMAGES, replace=False)]
    shifted = {split: (changed_source(images), labels) for split, (images, labels) in halves[1].items()}
    return {
        "original": write_delivery(workdir / "deliveries" / "original", halves[0]),
        "fresh": write_delivery(workdir / "deliveries" / "fresh", halves[1]),
        "shifted": write_delivery(workdir / "deliveries" / "shifted", shifted),
    }, clients


def run(workdir: Path, data: Path, *extra: str) -> dict:
    """One `mnist-mlops run` in `workdir`; its record, blessing and gates, and its wall time."""
    before = set((workdir / "runs").glob("2*")) if (workdir / "runs").exists() else set()
    started = time.perf_counter()
    completed = subprocess.run(
        [*MNIST_MLOPS, "run", "--data", str(data), *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"mnist-mlops run failed:\n{completed.stdout[-3000:]}{completed.stderr[-2000:]}")
    (folder,) = set((workdir / "runs").glob("2*")) - before
    report = json.loads((folder / "evaluate" / "evaluation" / "evaluation_report.json").read_text())
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "outcome": json.loads((folder / "run.json").read_text())["outcome"],
        "blessing": json.loads((folder / "evaluate" / "blessing.json").read_text()),
        "gates": {gate["name"]: gate for gate in report["thresholds"]},
        "report": report,
    }


def clients_send(workdir: Path, images: np.ndarray) -> None:
    """Original digits through the real scoring server following @production, logged as `serve` does."""
    from mnist_mlops.deployments import ensure_key, key_path, request_log_dir
    from mnist_mlops.imaging import encode_png
    from mnist_mlops.keys import read_key
    from mnist_mlops.registry import registry_uri
    from mnist_mlops.serving.server import ScoringClient, running_server, server_environment

    uri = registry_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    key_file = ensure_key(key_path(uri, "mnist-mlops"))
    environment = server_environment(
        "models:/mnist-mlops@production",
        registry=uri,
        key_file=key_file,
        request_log=request_log_dir(uri, "mnist-mlops"),
    )
    with running_server(environment) as server:
        scoring = ScoringClient(server.url, read_key(str(key_file)))
        for image in images:
            status, body = scoring.score(encode_png(image), "image/png")
            if status != 200:
                raise SystemExit(f"the server answered {status}: {body}")


def show(step: str, outcome: dict) -> None:
    print(f"\n== {step} ({outcome['seconds']} s): {outcome['outcome']}", flush=True)
    for reason in outcome["blessing"]["reasons"]:
        print(f"  - {reason}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-shift-") as scratch:
        workdir = Path(scratch)
        data, clients = deliveries(args.tarball.resolve(), workdir)
        first = run(workdir, data["original"])
        show("original delivery", first)
        clients_send(workdir, clients)
        shifted = run(workdir, data["shifted"])
        show("shifted delivery", shifted)
        fresh = run(workdir, data["fresh"])
        show("fresh delivery from the original source", fresh)
        accepted = run(workdir, data["shifted"], "--set", "evaluate.accept_data_shift=true")
        show("shifted delivery, shift accepted", accepted)
        clients_send(workdir, clients)
        serving = accepted["outcome"].rsplit(" v", 1)[-1]
        monitor = subprocess.run(
            [
                *MNIST_MLOPS,
                "monitor",
                "--requests",
                REQUEST_LOG,
                "--report",
                "monitor",
                "--model-version",
                serving,
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"\n== monitor after the accepted shift\n{monitor.stdout.strip()}", flush=True)
        report = json.loads((workdir / "monitor" / "monitor_report.json").read_text())
        regression = shifted["report"]["data_shift"]["reference_split"]
        summary = {
            "original": first["outcome"],
            "shifted": shifted["outcome"],
            "fresh": fresh["outcome"],
            "shifted_accepted": accepted["outcome"],
            "shifted_decision": shifted["blessing"]["data_shift"]["decision"],
            "accepted_decision": accepted["blessing"]["data_shift"]["decision"],
            "shifted_worst": shifted["gates"]["max_data_shift"]["value"],
            "fresh_worst": fresh["gates"]["max_data_shift"]["value"],
            "shifted_traffic_worst": shifted["gates"]["max_traffic_shift"]["value"],
            "champion_split_champion_accuracy": regression["champion_accuracy"],
            "champion_split_challenger_accuracy": regression["challenger_accuracy"],
            "monitor_alert": report["alert"],
            "monitor_reasons": report["alert_reasons"],
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
