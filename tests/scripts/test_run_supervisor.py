"""scripts/run.sh (make run) keeps the API, the stream server, the worker and beat up: a
process that exits is started again, with a growing wait while it keeps failing, and the
others keep running; TERM stops them all. Driven with stand-ins for gunicorn, uvicorn and celery that record
their pids, so that the supervisor itself is what is tested."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = """#!/usr/bin/env bash
case " $* " in *" worker "*) name=worker;; *" beat "*) name=beat;; *" config.asgi:application "*) name=streams;; *) name=api;; esac
echo $$ >> "$FAKE_DIR/$name.pids"
exec sleep 600
"""


@pytest.fixture
def run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gunicorn", "celery", "uvicorn"):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env={**os.environ, "BIN": str(bin_dir), "FAKE_DIR": str(tmp_path), "RESTART_MAX_SECONDS": "4"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process, tmp_path
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def pids(directory: Path, name: str) -> list[int]:
    path = directory / f"{name}.pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_worker_that_dies_is_started_again_and_the_api_keeps_running(run):
    process, directory = run
    wait_until(lambda: all(pids(directory, name) for name in ("api", "streams", "worker", "beat")))
    api, worker = pids(directory, "api")[0], pids(directory, "worker")[0]
    # when: the worker is killed
    os.kill(worker, signal.SIGKILL)
    # then: it comes back, and the API process never stopped
    wait_until(lambda: len(pids(directory, "worker")) == 2)
    assert alive(pids(directory, "worker")[1])
    assert pids(directory, "api") == [api] and alive(api)
    assert len(pids(directory, "beat")) == 1
    log = (directory / "run.log").read_text()
    assert "worker exited with status 137; starting it again in 1s" in log


def test_a_process_that_keeps_failing_waits_longer_each_time(run):
    process, directory = run
    wait_until(lambda: pids(directory, "beat"))
    for attempt in range(1, 3):
        os.kill(pids(directory, "beat")[-1], signal.SIGKILL)
        wait_until(lambda attempt=attempt: len(pids(directory, "beat")) == attempt + 1)
    log = (directory / "run.log").read_text()
    assert "beat exited with status 137; starting it again in 1s" in log
    assert "beat exited with status 137; starting it again in 2s" in log


def test_term_stops_them_all(run):
    process, directory = run
    wait_until(lambda: all(pids(directory, name) for name in ("api", "streams", "worker", "beat")))
    started = [pids(directory, name)[0] for name in ("api", "streams", "worker", "beat")]
    process.send_signal(signal.SIGTERM)
    process.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in started))
    # and nothing was started again on the way down
    time.sleep(1.5)
    everything = [pid for name in ("api", "streams", "worker", "beat") for pid in pids(directory, name)]
    assert sorted(everything) == sorted(started)
    assert not any(alive(pid) for pid in everything)
