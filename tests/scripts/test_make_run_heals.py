"""make run's real processes (gunicorn, a Celery worker, beat, on the embedded SQLite and
file broker): a worker SIGKILLed is started again, the API answers throughout, and
/health/ says 503 while no worker answers and 200 once one does again."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "REDIS_URL", "BEACON_", "CELERY_"))
    }
    port = free_port()
    env.update(
        BEACON_VAR_DIR=str(tmp_path / "var"),
        BIN=str(BIN),
        PORT=str(port),
        STREAM_PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        CELERY_CONCURRENCY="1",
        BEACON_SWEEP_INTERVAL_SECONDS="2",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    yield f"http://127.0.0.1:{port}/api/v1/notifications/health/", process, tmp_path / "run.log"
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def health(url) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return None


def worker_pid(log: Path) -> int:
    lines = [line for line in log.read_text().splitlines() if "] worker started (pid " in line]
    return int(lines[-1].rsplit("pid ", 1)[1].rstrip(")"))


def test_a_killed_worker_comes_back_while_the_api_answers(service):
    url, _, log = service
    deadline = time.monotonic() + 90
    while health(url) != 200:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    # when: the worker's main process is killed
    os.kill(worker_pid(log), signal.SIGKILL)
    # then: /health/ says so, the API keeps answering, and the worker comes back
    answers = []
    deadline = time.monotonic() + 90
    while not (503 in answers and answers[-1] == 200):
        assert time.monotonic() < deadline, (answers[-20:], log.read_text()[-3000:])
        answers.append(health(url))
        time.sleep(0.3)
    assert None not in answers
    assert "worker exited with status 137; starting it again in 1s" in log.read_text()
