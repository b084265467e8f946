"""The ``digits`` command against a real stack: CSV and JSON Lines rows, exit codes,
retries on 503 and 429, batches the server finds too large, ``digits health``, and the
progress bar only on a terminal."""

from __future__ import annotations

import csv
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ONE, SEVEN, SHIPPED_VERSION, draw_png, start_stack

SCRIPT = Path(sys.executable).parent / "digits"  # the console script pyproject declares
COLUMNS = ["path", "digit", "confidence", "model_version", "error", "error_message",
           "request_id"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("cli"), workers=1,
                    env={"BATCH_MAX_IMAGES": "4"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """sevens/ and ones/ (nested) plus a loose seven: 7 good drawings."""
    root = tmp_path_factory.mktemp("images")
    (root / "sevens").mkdir()
    (root / "ones" / "deeper").mkdir(parents=True)
    for i in range(3):
        (root / "sevens" / f"s{i}.png").write_bytes(draw_png(SEVEN))
    (root / "ones" / "o0.png").write_bytes(draw_png(ONE, background=(255, 255, 255, 255)))
    (root / "ones" / "deeper" / "o1.PNG").write_bytes(draw_png(ONE))
    (root / "ones" / "notes.txt").write_text("not an image: skipped inside folders")
    (root / "loose.png").write_bytes(draw_png(SEVEN))
    return root


def digits(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def test_folders_files_and_globs_to_csv(live, images, tmp_path):
    out = tmp_path / "labels.csv"
    run = digits("predict", images / "sevens", images / "ones", f"{images}/loose.*",
                 "--url", live.url, "--out", out)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    got = {Path(r["path"]).name: r for r in rows}
    assert set(got) == {"s0.png", "s1.png", "s2.png", "o0.png", "o1.PNG", "loose.png"}
    for name, row in got.items():
        assert row["digit"] == ("1" if name.startswith("o") else "7"), row
        assert 0 < float(row["confidence"]) <= 1 and row["model_version"] == str(SHIPPED_VERSION)
        assert row["error"] == "" and row["request_id"].startswith("digits-")
    # Rows keep the order of the arguments; batches of at most 4 (BATCH_MAX_IMAGES).
    assert [Path(r["path"]).parent.name for r in rows[:3]] == ["sevens"] * 3
    assert "6 ok, 0 failed" in run.stderr
    assert "labelling" not in run.stderr  # no progress bar when not on a terminal


def test_failures_to_jsonl_and_exit_1(live, images, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (bad / "blank.png").write_bytes(draw_png([]))
    (bad / "seven.png").write_bytes(draw_png(SEVEN))
    out = tmp_path / "labels.jsonl"
    run = digits("predict", bad, tmp_path / "missing.png", "--url", live.url, "--out", out)
    assert run.returncode == 1, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(list(r) == COLUMNS for r in rows)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["seven.png"]["digit"] == 7 and by_name["seven.png"]["error"] is None
    assert by_name["broken.png"]["error"] == "invalid_image"
    assert by_name["blank.png"]["error"] == "blank_image"
    assert by_name["missing.png"]["error"] == "not_found"
    assert by_name["broken.png"]["request_id"]
    assert "3 of 4 files failed" in run.stderr


def test_a_batch_larger_than_the_server_allows_is_split(live, images, tmp_path):
    out = tmp_path / "big.csv"
    run = digits("predict", images, "--batch", "50", "--url", live.url, "--out", out)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    assert len(rows) == 6 and all(r["digit"] for r in rows)
    # 6 images over a limit of 4: refused whole, then halved (3 + 3).
    assert {r["request_id"][-1] for r in rows} == {"a", "b"}


def test_no_worker_503_is_retried_until_one_is_back(live, images, tmp_path):
    out = tmp_path / "retried.csv"
    live.stop_worker(1)
    started_again = False
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), "predict", images / "sevens", "--url", live.url, "--out", out,
             "--retries", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Wait until the API has refused it at least once, then bring a worker back.
        log = live.log_dir / "api.log"
        deadline = time.monotonic() + 30
        while "POST /predict/batch answered 503 no_workers" not in log.read_text(
                errors="replace"):
            assert time.monotonic() < deadline, live.tail("api")
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        live.start_worker(1)
        started_again = True
        _, stderr = proc.communicate(timeout=180)
    finally:
        if not started_again:
            live.start_worker(1)
        live.wait_ready(120)
    assert proc.returncode == 0, stderr
    assert [r["digit"] for r in read_csv(out)] == ["7", "7", "7"]
    assert "retries" in stderr


def test_429_is_retried_after_retry_after(live, images, tmp_path):
    """A rate limit of 2 requests a second; 6 one-image batches, 4 at a time."""
    live.stop_api()
    live.start_api(RATE_LIMIT="2/second")
    live.wait_ready(60)
    try:
        out = tmp_path / "limited.csv"
        run = digits("predict", images, "--batch", "1", "--concurrency", "4",
                     "--url", live.url, "--out", out)
    finally:
        live.stop_api()
        live.start_api()
        live.wait_ready(60)
    assert run.returncode == 0, run.stderr
    assert len(read_csv(out)) == 6
    assert "retries" in run.stderr  # some were refused (429) and sent again


def test_health_prints_ready(live):
    run = digits("health", "--url", live.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "ready"
    assert "1 live, 1 serving" in run.stdout and f"model versions: {SHIPPED_VERSION}" in run.stdout
    run = digits("health", "--url", live.url, "--json")
    assert json.loads(run.stdout)["status"] == "ready"


def test_health_not_ready_and_unreachable(live):
    live.stop_worker(1)
    try:
        deadline = time.monotonic() + 30
        while (run := digits("health", "--url", live.url)).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        live.start_worker(1)
        live.wait_ready(120)
    assert run.returncode == 1 and run.stdout.startswith("NOT ready (HTTP 503)")
    assert "no live worker" in run.stdout
    run = digits("health", "--url", "http://127.0.0.1:9", "--timeout", "2")
    assert run.returncode == 3 and "unreachable" in run.stderr


def test_usage_errors_exit_2(live, tmp_path):
    assert digits("predict", tmp_path / "x.png", "--url", "ftp://nope").returncode == 2
    assert digits("predict", "--url", live.url).returncode == 2  # no PATH


def test_a_progress_bar_on_a_terminal(live, images, tmp_path):
    """Under a pseudo-terminal the bar is drawn (on stderr); piped, it is not (above)."""
    out = tmp_path / "tty.csv"
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execv(str(SCRIPT), [str(SCRIPT), "predict", str(images), "--url", live.url,
                               "--out", str(out)])
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    text = seen.decode(errors="replace")
    assert "labelling" in text and "6/6" in text, text
    assert len(read_csv(out)) == 6
