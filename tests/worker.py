"""A real Celery worker process, for the integration tests and the benchmark."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """A `celery worker` subprocess with the given environment, on a queue of its own."""

    def __init__(self, env: dict, queue: str, log_path: Path, *, concurrency: int = 1, loglevel: str = "INFO"):
        self.env, self.queue, self.log_path = env, queue, log_path
        self.concurrency, self.loglevel = concurrency, loglevel
        self.process: subprocess.Popen | None = None

    def start(self, *, wait_ready: bool = True) -> "Worker":
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel",
                self.loglevel,
                "--concurrency",
                str(self.concurrency),
                "--pool",
                "prefork",
                "-Q",
                self.queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait_ready:
            self.wait_for_log("ready.", timeout=60)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(text) >= count:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}):\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"worker log never showed {text!r} x{count}:\n{self.log_text()[-3000:]}")

    def pool_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def exited(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()
