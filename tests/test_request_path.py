"""The scoring server's request path: faster ways to the same answers.

A plain pixel array is read from the JSON text with numpy, other JSON is parsed by orjson, request
records are written by a background thread and the server logs at WARNING. Each is checked against the
way it replaced: the same parse as the standard library, every record on disk. A PNG request decodes
as the batch decoder decodes it among others.
"""

from __future__ import annotations

import base64
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts, imaging
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.imaging import decode_pngs, encode_png
from mnist_mlops.serving import payloads, request_log
from mnist_mlops.serving.payloads import BadRequest, Limits, parse_request
from mnist_mlops.serving.request_log import RequestLog, read_records
from mnist_mlops.serving.server import ENTRY_SCRIPT
from mnist_mlops.serving.validation import invalid_requests
from tests import pngs
from tests.datasets import digit_images
from tests.pngs import chunk

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_png.tar.gz"
SERVER_LOGGERS = ("azmlinfsrv", "gunicorn.access", "gunicorn.error")


def raw_png(image: np.ndarray, filters: list[int], *, idat_parts: int = 1, level: int = 6) -> bytes:
    """A grayscale PNG written by hand, with chosen row filters, IDAT split and compression level."""
    rows = pngs.filter_rows(image.reshape(len(image), -1), filters, bpp=1)
    header_chunk = pngs.ihdr(image.shape[1], image.shape[0], interlace=0)
    return pngs.png_bytes(header_chunk, zlib.compress(rows, level), idat_parts=idat_parts)


def with_chunks(png: bytes, *chunks: bytes) -> bytes:
    """`png` with `chunks` between its header and its image data."""
    return png[:33] + b"".join(chunks) + png[33:]


INFLATED_TEXT = 1_000_000
"""What each compressed chunk below inflates to: under Pillow's 1 MB a chunk, so Pillow's PNG reader
would inflate it."""


def compressed_chunk_cases() -> dict[str, bytes]:
    """Plain grayscale PNGs carrying chunks Pillow's PNG reader inflates and the decoder only CRC-checks."""
    plain = raw_png(digit_images(1, seed=3)[0][4], [1] * 28)
    text = zlib.compress(bytes(INFLATED_TEXT), 9)  # about 1 KB
    return {
        "zTXt bomb": with_chunks(plain, *[chunk(b"zTXt", b"Comment\x00\x00" + text)] * 8),
        "compressed iTXt": with_chunks(plain, chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + text)),
        "iCCP": with_chunks(plain, chunk(b"iCCP", b"profile\x00\x00" + text)),
    }


def outcome(blob: bytes, shape: tuple[int, ...] = MNIST_IMAGE_SHAPE) -> np.ndarray | tuple[int, str]:
    """The pixels a one-PNG request decodes to, or its refusal (status, message)."""
    try:
        return parse_request(blob, "image/png", Limits(), shape)
    except BadRequest as refusal:
        return refusal.status, refusal.message


def same(first, second) -> bool:
    """The same pixels (dtype and shape included) or the same refusal."""
    if isinstance(first, np.ndarray) or isinstance(second, np.ndarray):
        arrays = isinstance(first, np.ndarray) and isinstance(second, np.ndarray)
        return arrays and first.dtype == second.dtype and np.array_equal(first, second)
    return first == second


def plain_pngs() -> list[bytes]:
    """8-bit grayscale PNGs of every row filter, mixed and alone, split and whole, by hand and by Pillow."""
    rng = np.random.default_rng(7)
    digits, _ = digit_images(3, seed=1)
    images = [*digits, rng.integers(0, 256, MNIST_IMAGE_SHAPE, dtype=np.uint8)]
    images += [np.zeros(MNIST_IMAGE_SHAPE, np.uint8), np.full(MNIST_IMAGE_SHAPE, 255, np.uint8)]
    blobs = []
    harmless = (chunk(b"gAMA", (45455).to_bytes(4, "big")), chunk(b"tEXt", b"Comment\x00a digit"))
    for index, image in enumerate(images):
        blobs.append(encode_png(image))
        blobs.append(with_chunks(encode_png(image), *harmless))
        blobs.append(raw_png(image, rng.integers(0, 5, 28).tolist(), idat_parts=1 + index % 3))
        blobs += [raw_png(image, [kind] * 28, level=index % 10) for kind in range(5)]
    return blobs


def test_a_png_request_decodes_as_it_does_among_other_pngs():
    """The stacked unfiltering (`imaging._unfilter`) gives each image the same pixels alone or beside
    images of other row filters."""
    blobs = plain_pngs()
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert not batch.errors
    for blob, expected in zip(blobs, batch.images, strict=True):
        assert same(outcome(blob), expected[None])


@pytest.mark.skipif(not SHARED_MNIST.is_file(), reason="the shared MNIST tarball is not on this machine")
def test_real_mnist_pngs_decode_alike_one_by_one_and_as_a_batch():
    blobs = []
    with tarfile.open(SHARED_MNIST, "r:gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".png"):
                blobs.append(archive.extractfile(member).read())
            if len(blobs) == 3000:
                break
    batch = decode_pngs(blobs, MNIST_IMAGE_SHAPE)
    assert not batch.errors
    one_by_one = np.concatenate([outcome(blob) for blob in blobs])
    assert np.array_equal(one_by_one, batch.images)


@pytest.mark.parametrize("kind", list(compressed_chunk_cases()))
def test_a_png_s_compressed_ancillary_chunks_are_never_inflated(kind, monkeypatch):
    def no_reader(*_args, **_kwargs):
        raise AssertionError("a plain grayscale PNG went to Pillow's PNG reader")

    monkeypatch.setattr(imaging.Image, "open", no_reader)  # the reader inflates them; the row decoder never
    decoded = outcome(compressed_chunk_cases()[kind])
    assert isinstance(decoded, np.ndarray) and decoded.shape == (1, *MNIST_IMAGE_SHAPE)


def json_outcome(body: bytes) -> np.ndarray | tuple[int, str]:
    try:
        return parse_request(body, "application/json", Limits(max_batch=8), MNIST_IMAGE_SHAPE)
    except BadRequest as refusal:
        return refusal.status, refusal.message


def json_bodies() -> dict[str, bytes]:
    digits, _ = digit_images(1, seed=5)
    pngs = [encode_png(image) for image in digits[:3]]
    catalogue = invalid_requests(digits[0], Limits(max_batch=8), key=None)
    bodies = {
        request.kind: request.body for request in catalogue if request.content_type == "application/json"
    }
    return bodies | {
        "pixels": json.dumps({"instances": digits[:8].astype(int).tolist()}).encode(),
        "pixels with a channel axis": json.dumps({"instances": digits[:2, ..., None].tolist()}).encode(),
        "base64 PNGs": json.dumps({"images": [base64.b64encode(png).decode() for png in pngs]}).encode(),
        "schema version": json.dumps({"schema_version": 1, "instances": digits[:1].tolist()}).encode(),
        "UTF-8 BOM": b"\xef\xbb\xbf" + json.dumps({"instances": digits[:1].tolist()}).encode(),
        "UTF-16": json.dumps({"instances": digits[:1].tolist()}).encode("utf-16"),
        "lone surrogate in a key": b'{"\\ud800": 1}',
        "NaN": b'{"instances": [[[NaN]]]}',
        "Infinity": b'{"instances": [[[-Infinity]]]}',
        "nested deeply": b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "not UTF-8": b'{"instances": "\xff"}',
        "trailing content": b'{"instances": []} x',
        "floats": json.dumps({"instances": (digits[:1] / 2).tolist()}).encode(),
        "exponent": b'{"instances": [[[1e2]]]}',
    }


@pytest.mark.parametrize("kind", list(json_bodies()))
def test_json_bodies_parse_as_the_standard_library_parses_them(kind, monkeypatch):
    body = json_bodies()[kind]
    fast = json_outcome(body)
    with monkeypatch.context() as patched:  # the standard library alone, as before orjson
        patched.setattr(payloads.orjson, "loads", payloads._parse_json)
        assert same(fast, json_outcome(body))


def pixel_bodies() -> dict[str, tuple[bytes, bool]]:
    """JSON pixel bodies: (body, whether it is plainly a pixel array the text reader takes)."""
    digits, _ = digit_images(1, seed=6)
    four = digits[:4].astype(int).tolist()
    plain = json.dumps({"instances": four}).encode()
    compact = json.dumps({"instances": four}, separators=(",", ":")).encode()
    zeros = json.dumps({"instances": np.zeros((1, *MNIST_IMAGE_SHAPE), int).tolist()}, separators=(",", ":"))
    return {
        "json.dumps spacing": (plain, True),
        "compact": (compact, True),
        "rows on lines": (compact.replace(b"],[", b"],\r\n\t ["), True),
        "channel axis": (json.dumps({"instances": digits[:2, ..., None].tolist()}).encode(), True),
        "one image": (json.dumps({"instances": four[:1]}).encode(), True),
        "space before a comma": (plain.replace(b", ", b" ,", 1), False),
        "two numbers in one element": (zeros.replace("[0,0,", "[0 0,,", 1).encode(), False),
        "leading zero": (zeros.replace("[0,0,", "[00,0,", 1).encode(), False),
        "256": (zeros.replace("[0,0,", "[256,0,", 1).encode(), False),
        "1000": (zeros.replace("[0,0,", "[1000,0,", 1).encode(), False),
        "negative": (zeros.replace("[0,0,", "[-1,0,", 1).encode(), False),
        "float": (zeros.replace("[0,0,", "[1.0,0,", 1).encode(), False),
        "trailing comma": (zeros.replace("0]]]", "0,]]]", 1).encode(), False),
        "a row short": (zeros.replace("[0,0,", "[0,", 1).encode(), False),
        "one level deeper": (zeros.replace("[[[", "[[[[", 1).replace("]]]", "]]]]", 1).encode(), False),
        "too many images": (json.dumps({"instances": digits[:9].astype(int).tolist()}).encode(), False),
        "empty": (b'{"instances": []}', False),
        "key with a space": (plain.replace(b'"instances"', b'" instances"'), False),
        "escaped key": (plain.replace(b'"instances"', b'"\\u0069nstances"'), False),
        "schema version": (json.dumps({"schema_version": 1, "instances": four[:1]}).encode(), False),
        "two documents": (plain + b" " + plain, False),
        "a number after an inner array": (b'{"instances":[[[1,2]3,[4,]]]}', False),
        "a number before an inner array": (b'{"instances":[[7[1,],[2,3]]]}', False),
        "a number moved out of a row": (zeros.replace("0],[0", "]0,[0", 1).encode(), False),
    }


@pytest.mark.parametrize("kind", list(pixel_bodies()))
def test_pixel_arrays_read_from_the_text_get_the_json_parser_s_answer(kind, monkeypatch):
    body, plain = pixel_bodies()[kind]
    limits = Limits(max_batch=8)
    assert (payloads._plain_pixels(body, limits, MNIST_IMAGE_SHAPE) is not None) == plain
    fast = json_outcome(body)
    with monkeypatch.context() as patched:  # the standard library alone, as before the text reader
        patched.setattr(payloads, "_plain_pixels", lambda *_: None)
        patched.setattr(payloads.orjson, "loads", payloads._parse_json)
        assert same(fast, json_outcome(body))


def submitted(log: RequestLog, count: int, tag: str = "r") -> list[str]:
    """`count` records submitted to `log`; their request ids."""
    ids = [f"{tag}-{index}" for index in range(count)]
    image = np.full((1, *MNIST_IMAGE_SHAPE), 200, np.uint8)
    probabilities = np.eye(10, dtype=np.float32)[[3]]
    for request_id in ids:
        log.submit(
            model_name="m",
            model_version="1",
            status=200,
            started=time.perf_counter(),
            images=image,
            probabilities=probabilities,
            classes=MNIST_CLASSES,
            request_id=request_id,
        )
    return ids


def logged_ids(where: Path) -> list[str]:
    """The request ids of a log file, or of every log file in a folder."""
    files = sorted(where.glob("*.jsonl")) if where.is_dir() else [where]
    return [json.loads(line)["request_id"] for file in files for line in file.open()]


def test_records_submitted_from_many_threads_are_all_written_once(tmp_path, monkeypatch):
    monkeypatch.setattr(request_log, "QUEUE_LIMIT", 4)  # submitters wait for the writer, none is dropped
    log = RequestLog(tmp_path / "requests")
    threads = [threading.Thread(target=submitted, args=(log, 150, f"t{n}")) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.flush()
    ids = logged_ids(log.folder)
    assert len(ids) == len(set(ids)) == 900
    for line in log.path.read_text().splitlines():
        contracts.validate(json.loads(line), "request_record", source="request log")


def test_a_reader_in_the_serving_process_sees_every_record_submitted(tmp_path):
    log = RequestLog(tmp_path / "requests")
    ids = submitted(log, 300)
    records, _ = read_records(log.folder)
    assert [record["request_id"] for record in records] == ids


def test_records_still_queued_are_written_when_the_process_exits(tmp_path):
    script = (
        "import sys; from pathlib import Path; from tests.test_request_path import RequestLog, submitted;"
        " submitted(RequestLog(Path(sys.argv[1])), 3000)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=Path(__file__).parents[1])
    assert len(logged_ids(tmp_path)) == 3000


def _submit_in_child(log: RequestLog) -> None:
    submitted(log, 5, "child")
    log.flush()  # multiprocessing's children leave through os._exit: no exit handlers


def test_a_forked_worker_writes_its_own_file_with_its_own_writer(tmp_path):
    log = RequestLog(tmp_path / "requests")
    submitted(log, 1, "parent")  # the parent's writer thread is running when it forks
    child = multiprocessing.get_context("fork").Process(target=_submit_in_child, args=(log,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    log.flush()
    by_file = {
        file.name: [json.loads(line)["request_id"] for line in file.open()] for file in log.folder.iterdir()
    }
    assert by_file == {
        f"requests-{os.getpid()}.jsonl": ["parent-0"],
        f"requests-{child.pid}.jsonl": [f"child-{index}" for index in range(5)],
    }


def test_a_worker_forked_while_its_parent_closes_the_log_still_writes(tmp_path, monkeypatch):
    log = RequestLog(tmp_path / "requests")
    slow = log._append_batch
    monkeypatch.setattr(log, "_append_batch", lambda batch: (time.sleep(0.5), slow(batch)))
    submitted(log, 1, "parent")
    closing = threading.Thread(target=log.close)
    closing.start()
    time.sleep(0.1)  # the parent is inside close(), its writer stopping
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        signal.alarm(20)  # a writer that never writes would make flush wait for good: end it
        log._append_batch = slow
        submitted(log, 3, "child")
        log.flush()
        os._exit(0 if logged_ids(log.path) == ["child-0", "child-1", "child-2"] else 1)
    closing.join()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_record_that_cannot_be_written_is_reported_counted_and_the_writer_goes_on(tmp_path, capfd):
    log = RequestLog(tmp_path / "requests")
    log.path.mkdir()  # the log file's name is taken: opening it fails
    submitted(log, 1, "lost")
    log.flush()
    assert "could not write 1 record(s)" in capfd.readouterr().err
    assert log.dropped == 1
    log.path.rmdir()
    submitted(log, 2, "kept")
    log.flush()
    assert logged_ids(log.folder) == ["kept-0", "kept-1"]
    assert log.dropped == 1


def test_a_record_that_cannot_be_formatted_costs_only_itself(tmp_path, capfd):
    log = RequestLog(tmp_path / "requests")
    submitted(log, 1, "before")
    log.submit(
        model_name="m",
        model_version="1",
        status=200,
        started=time.perf_counter(),
        images=np.zeros((1, *MNIST_IMAGE_SHAPE), np.uint8),
        probabilities=np.eye(10, dtype=np.float32)[[3]],
        classes=["zero"],  # no name for class 3: the line cannot be made
    )
    submitted(log, 1, "after")
    log.flush()
    assert logged_ids(log.folder) == ["before-0", "after-0"]
    assert log.dropped == 1
    assert "could not write 1 record(s)" in capfd.readouterr().err


def open_files() -> set[str]:
    """What this process's file descriptors point at."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return found


def test_close_writes_what_was_queued_ends_the_writer_and_closes_the_file(tmp_path):
    log = RequestLog(tmp_path / "requests")
    before = set(threading.enumerate())
    ids = submitted(log, 500)
    writers = set(threading.enumerate()) - before
    assert [thread.name for thread in writers] == ["request-log"]
    log.flush()
    assert str(log.path) in open_files()  # kept open across records
    log.close()
    assert not any(thread.is_alive() for thread in writers)
    assert str(log.path) not in open_files()
    assert logged_ids(log.path) == ids
    log.close()  # closing twice is harmless; a later record starts a writer again
    ids += submitted(log, 1, "again")
    log.close()
    assert logged_ids(log.path) == ids


def test_a_worker_forked_while_the_lock_is_held_still_logs(tmp_path):
    log = RequestLog(tmp_path / "requests")
    with request_log._START_LOCK:  # as another thread starting or closing a writer holds it at the fork
        child = multiprocessing.get_context("fork").Process(target=_submit_in_child, args=(log,))
        child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert logged_ids(log.folder) == [f"child-{index}" for index in range(5)]


def test_a_log_file_removed_by_someone_else_costs_no_later_record(tmp_path):
    log = RequestLog(tmp_path / "requests", max_bytes=1000, keep=2)  # a few records a file
    submitted(log, 1, "before")
    log.flush()
    log.path.unlink()  # while the writer holds it open: its next rotation finds no file to rename
    ids = submitted(log, 20, "after")
    log.close()
    assert log.dropped == 0
    assert logged_ids(log.folder)[-1] == ids[-1]


def test_the_server_logging_config_ships_beside_the_entry_script_at_warning():
    shipped = resources.files("mnist_mlops.serving") / "logging.json"
    ours = json.loads(shipped.read_text())
    assert Path(str(shipped)).parent == ENTRY_SCRIPT.parent
    packaged = json.loads((resources.files("azureml_inference_server_http") / "logging.json").read_text())
    for section in ("handlers", "formatters", "filters"):  # the server's own config but for the levels
        assert {name: {**value, "level": "-"} for name, value in ours[section].items()} == {
            name: {**value, "level": "-"} for name, value in packaged[section].items()
        }
    assert {ours["handlers"][name]["level"] for name in ours["handlers"]} == {"WARNING"}
    assert {ours["loggers"][name]["level"] for name in SERVER_LOGGERS} == {"WARNING"}
    assert ours["disable_existing_loggers"] is False  # score.py applies it again in a running worker


@pytest.mark.parametrize("layout", ["local", "azure_ml"])
def test_the_server_finds_the_logging_config_locally_and_in_azure_ml_s_layout(layout, tmp_path):
    """Locally `mnist-mlops serve` passes the entry script's absolute path; on an endpoint AML_APP_ROOT
    is the code snapshot and the entry script a path inside it."""
    root = ENTRY_SCRIPT.parents[2]
    settings = {"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": str(ENTRY_SCRIPT)}
    if layout == "azure_ml":
        settings = {"AML_APP_ROOT": str(root), "AZUREML_ENTRY_SCRIPT": "mnist_mlops/serving/score.py"}
    script = (
        "import logging, azureml_inference_server_http.server.config;"
        f" print([logging.getLevelName(logging.getLogger(name).level) for name in {SERVER_LOGGERS!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **settings},
        cwd=root if layout == "azure_ml" else tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(["WARNING"] * 3) in result.stdout.splitlines()
