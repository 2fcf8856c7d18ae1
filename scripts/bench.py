#!/usr/bin/env python
"""Beacon's benchmark on PostgreSQL and Redis, with django-post_office (the peer) measured
in the same sitting, and every figure printed beside the peer's and the goal.

Phases (each can be left out with --skip-NAME):

1. single  HTTP accept of single sends: POST /api/v1/notifications/send/ over real sockets
           to gunicorn (a subprocess on a free loopback port), from 8 client threads each
           with a keep-alive requests.Session, after a short warm-up. No Celery worker runs:
           the messages wait in Redis and are purged after. Prints req/s, p50 and p99, and
           the clients' own CPU, to show they are not the bound (--client-procs spreads them
           over processes if they ever are). Peer: post_office's `mail.send` loop (the
           per-request path, without HTTP).
2. bulk    Bulk accept of --bulk recipients (100,000) through POST .../send/batch/ in
           requests of 1,000, from 2 clients, to the same gunicorn. Prints notifications/s
           and the peak RSS sampled every 0.1 s from /proc: of the largest single gunicorn
           process (the goal, as the peer's figure is its one process's) and of the whole
           gunicorn tree (master and workers summed). Peer: `mail.send_many` in one call.
3. null    Dispatch of queued deliveries to a no-network provider (BEACON_SMS_PROVIDER=console
           with LOG_LEVEL=WARNING: it builds each message and drops it, no I/O): the 100,000 of phase 2, then 10,000 more (--small), each set
           queued while no worker runs, then drained by one `celery worker -c 2` started
           after. delivered/s = sent / (last sent_at - worker spawn), so the worker's start
           counts as the peer's Django start does in its wall time. The 100k/10k time ratio
           uses the drain windows (first to last sent_at), which leave that constant out.
           Peer: `manage.py send_queued_mail` (one process, 5 threads).
4. twilio  Dispatch of --twilio (20,000) queued deliveries through the real twilio client to
           the Twilio double (tests/doubles/twilio.py, in a process of its own), and in the
           same sitting a bare-client ceiling: 2 processes, each with a keep-alive
           requests.Session, POSTing the same form (To, From, Body, StatusCallback) with
           basic auth to the same double. Ours / ceiling compares drain windows. The double
           is a Python HTTP server on the same two cores as its senders: the machine's CPU
           bounds both figures, and the cpu lines show the double's share of it.
4b. push   Dispatch of --push (20,000) queued push deliveries (one Android device per
           recipient, registered before the accept) through pyfcm's session and OAuth
           token to the FCM HTTP v1 double (tests/doubles/fcm.py, in a process of its own,
           with its fake OAuth token endpoint), by the same `celery worker -c 2`, and in
           the same sitting a bare-client ceiling: 2 processes with keep-alive sessions
           POSTing the same v1 messages with a bearer token to the same double.
5. peer    `run_bench.sh po` from ../shared/peers/post_office with REPS=1,
           SIZES="10000 100000", LOOP_SIZES=1000, into a results directory of this sitting
           (default /tmp/peerbench/results/beacon-bench), read through `run_bench.sh summary`
           (its raw.csv). About 5 minutes. It runs after ours, never at the same time.

Deliveries are queued for phases 3 and 4 through the bulk-accept endpoint, over HTTP.
The notifications_* tables (found in the catalogue) are emptied and the queue purged
between phases. A "cpu" line under each phase says where the machine's two cores went
(cores busy per process group, from /proc), which is what bounds the figure.

    make bench                                    # everything, about 7 minutes (5 of them the peer)
    make bench BENCH_ARGS="-n 2000 --no-peer"     # a quick run at 2,000
    make bench BENCH_ARGS="--skip-single --skip-twilio"
    make bench BENCH_ARGS="--peer-only"

DATABASE_URL and REDIS_URL choose the services (defaults: database `beacon_bench` on
127.0.0.1:5432, created if missing, and Redis database 14 on 127.0.0.1:6379); the bench
database's Beacon tables are emptied first. Each run uses a Celery queue of its own.
Ratios are ours/peer for rates and peer/ours for RSS and time ratios: above 1 is better.
Exits 1 when a phase could not be measured (refused requests, failed or missing
deliveries, a missing endpoint or provider); a missed goal is marked, not an error.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlparse

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VAR = ROOT / "var"
PEER_DIR = ROOT.parent / "shared" / "peers" / "post_office"
PEER_BASE = Path(os.environ.get("PEERBENCH_DIR", "/tmp/peerbench"))

SID, TOKEN, FROM_NUMBER = "AC" + "b" * 32, "bench-auth-token", "+15005550006"
SEND_PATH = "/api/v1/notifications/send/"
BATCH_PATH = "/api/v1/notifications/send/batch/"
HEALTH_PATH = "/api/v1/notifications/health/"
CALLBACK_URL = "http://127.0.0.1:8000/api/v1/notifications/sms-status-callback/"
WARMUP_BASE = 9_000_000  # recipient numbers of warm-up requests, apart from the measured ones
FCM_PROJECT = "beacon-bench"

# gunicorn for the HTTP phases, chosen on the 2-core machine with phase 1 (3,000 sends from 8
# keep-alive clients, three interleaved rounds of each): sync with 2 or 3 workers gave the most
# req/s per core left by other load (110-125); sync 4 and gthread (2 x 4, 4 x 2 threads) 5-15 %
# less, and gthread left 0.1-0.4 cores idle: a keep-alive connection stays on the worker that
# accepted it, so the load spreads unevenly, and a worker's threads share one GIL. Sync workers
# close the connection after each answer (the clients reconnect, cheap on loopback). Sync 3
# keeps the cores busiest (idle <= 0.06). --web-workers / --web-threads (> 1: gthread) try others.
WEB_WORKERS, WEB_THREADS = 3, 1

CPU_COUNT = os.cpu_count() or 1
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(Exception):
    """A phase could not be measured; the message says why."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configure_environment() -> None:
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/beacon_bench")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["BEACON_QUEUE"] = f"beacon-bench-{uuid.uuid4().hex[:8]}"
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"


def ensure_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = psycopg2.connect(
        host=parsed.hostname,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname="postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


# --- the Twilio double, in a process of its own -----------------------------------------


def serve_double(kind: str, port_queue) -> None:
    if kind == "fcm":
        from tests.doubles.fcm import FcmDouble

        double = FcmDouble(project_id=FCM_PROJECT).start()
        port_queue.put((double.base_url, json.dumps(double.service_account_info())))
    else:
        from tests.doubles.twilio import TwilioDouble

        double = TwilioDouble(account_sid=SID, auth_token=TOKEN).start()
        port_queue.put((double.base_url, ""))
    signal.sigwait([signal.SIGTERM])


def start_double(kind: str = "twilio") -> tuple[multiprocessing.Process, str, str]:
    """The double in a process of its own: (process, base URL, its credentials if any)."""
    # SIGTERM stays blocked in the child, where sigwait() takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    port_queue = multiprocessing.Queue()
    double = multiprocessing.Process(target=serve_double, args=(kind, port_queue), daemon=True)
    double.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    return (double, *port_queue.get(timeout=20))


# --- /proc: process trees, RSS and CPU --------------------------------------------------


def proc_tree(pid: int) -> list[int]:
    """The pid and all its descendants, from /proc/*/task/*/children."""
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                stack.extend(int(child) for child in children.read_text().split())
            except OSError:
                pass
    return pids


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


class RssSampler:
    """Peak RSS of a process tree, sampled every 0.1 s in a thread: the summed tree and the
    largest single process."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak_tree_kb = self.peak_single_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        sizes = [rss_kb(pid) for pid in proc_tree(self.pid)]
        return sum(sizes), max(sizes, default=0)

    def _run(self) -> None:
        while True:
            tree, single = self.sample()
            self.peak_tree_kb, self.peak_single_kb = max(self.peak_tree_kb, tree), max(self.peak_single_kb, single)
            if self._stop.wait(self.interval):
                return

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak_tree_kb, self.peak_single_kb


def cpu_snapshot() -> tuple[int, int, dict[int, tuple[str, int, int]]]:
    """(all ticks, idle ticks) of the machine, and (name, parent, CPU ticks) per process."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    processes = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # utime + stime, and cutime + cstime: the time of its children that exited and were
        # reaped (postgres backends, pool processes), which would otherwise be lost.
        processes[int(entry.name)] = (
            text[text.index("(") + 1 : text.rindex(")")],
            int(fields[1]),
            sum(int(value) for value in fields[11:15]),
        )
    return sum(ticks), ticks[3] + ticks[4], processes


class CpuMeter:
    """Where the machine's cores went between start() and stop(): cores busy per group.

    Groups are the process trees under the given roots, this process (the bench and, in
    thread mode, its clients), postgres and redis by name; `other` is the rest of the busy
    time (another engineer's tests, the kernel), with its busiest process names. A process
    that exited in between counts in the process that reaped it."""

    def __init__(self, roots: dict[str, int | None]):
        self.roots: dict[str, list[int]] = {name: [pid] for name, pid in roots.items() if pid}

    def add(self, name: str, pids: list[int]) -> None:
        self.roots.setdefault(name, []).extend(pids)

    def start(self) -> CpuMeter:
        self.before = cpu_snapshot()
        return self

    def stop(self) -> dict:
        total0, idle0, before = self.before
        total1, idle1, after = cpu_snapshot()
        capacity = max(total1 - total0, 1)
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in after.items():
            children.setdefault(ppid, []).append(pid)
        owner: dict[int, str] = {os.getpid(): "bench"}
        for name, roots in self.roots.items():
            stack = list(roots)
            while stack:
                pid = stack.pop()
                owner[pid] = name
                stack.extend(children.get(pid, []))
        cores = {name: 0.0 for name in [*self.roots, "bench", "postgres", "redis"]}
        strangers: dict[str, float] = {}
        for pid, (name, _, ticks) in after.items():
            used = (ticks - before[pid][2] if pid in before else ticks) / capacity * CPU_COUNT
            group = owner.get(pid) or {"postgres": "postgres", "redis-server": "redis"}.get(name)
            if used <= 0:
                continue
            if group:
                cores[group] += used
            else:
                strangers[name] = strangers.get(name, 0.0) + used
        busy = (capacity - (idle1 - idle0)) / capacity * CPU_COUNT
        cores["other"] = max(busy - sum(cores.values()), 0.0)
        cores["idle"] = CPU_COUNT - busy
        top = sorted(strangers.items(), key=lambda item: -item[1])[:3]
        return {**cores, "other_names": ", ".join(f"{name} {used:.2f}" for name, used in top if used >= 0.02)}


def cpu_line(cores: dict) -> str:
    """Cores busy per group: `cpu (cores of 2): gunicorn 1.30, postgres 0.35, other 0.10 (bash 0.08); idle 0.05`."""
    groups = {name: value for name, value in cores.items() if name not in ("idle", "other_names") and value >= 0.005}
    parts = ", ".join(f"{name} {value:.2f}" for name, value in groups.items())
    others = f" ({cores['other_names']})" if cores.get("other_names") and "other" in groups else ""
    return f"cpu (cores of {CPU_COUNT}): {parts}{others}; idle {cores['idle']:.2f}"


# --- gunicorn ----------------------------------------------------------------------------


class Gunicorn:
    """`gunicorn config.wsgi` as a subprocess on a free loopback port."""

    def __init__(self, env: dict, *, workers: int, threads: int, log_path: Path):
        self.env, self.workers, self.threads, self.log_path = env, workers, threads, log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def description(self) -> str:
        if self.threads > 1:
            return f"gunicorn gthread {self.workers} workers x {self.threads} threads"
        return f"gunicorn sync {self.workers} workers"

    def start(self) -> Gunicorn:
        worker_class = ["--worker-class", "gthread", "--threads", str(self.threads)] if self.threads > 1 else []
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", str(self.workers), *worker_class, "--backlog", "2048", "--keep-alive", "30"]
        command += ["--timeout", "120", "--log-level", "warning"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                response = requests.get(self.url + HEALTH_PATH, timeout=5)
            except requests.ConnectionError:
                time.sleep(0.1)
                continue
            # The workers start later, per phase: a 503 for "no worker answers" (or a sweep
            # that never ran) is expected here; the database and broker must be up.
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            if not (body.get("database", {}).get("ok") and body.get("broker", {}).get("ok")):
                raise BenchError(f"health check answered {response.status_code}: {response.text[:500]}")
            return self
        raise BenchError(f"gunicorn did not answer within 60 s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)  # graceful: the master stops its workers
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.process:
            self.log.close()


# --- HTTP load: threads with keep-alive sessions, in one or more processes ---------------


def send_body(i: int) -> dict:
    return {
        "channel": "sms",
        "recipient": {"phone": f"+1415{i:07d}", "external_id": f"bench-{i}"},
        "template": "bench",
        "context": {"event_name": "Haircut", "start_time": f"slot {i}"},
    }


def batch_body(start: int, size: int) -> dict:
    return {
        "channel": "sms",
        "template": "bench",
        "category": "transactional",
        "recipients": [
            {
                "phone": f"+1415{i:07d}",
                "external_id": f"bench-{i}",
                "context": {"event_name": "Haircut", "start_time": f"slot {i}"},
            }
            for i in range(start, start + size)
        ],
    }


def push_batch_body(start: int, size: int) -> dict:
    return {
        "channel": "push",
        "template": "bench",
        "category": "transactional",
        "recipients": [
            {"external_id": f"bench-{i}", "context": {"event_name": "Haircut", "start_time": f"slot {i}"}}
            for i in range(start, start + size)
        ],
    }


def fcm_message(i: int) -> dict:
    """What the push adapter posts for one of our deliveries."""
    return {
        "message": {
            "token": f"bench-token-{i}",
            "notification": {"title": "Reminder: Haircut", "body": f"Haircut slot {i}"},
            "data": {"beacon_delivery": str(uuid.UUID(int=i)), "action_url": f"myapp://booking/{i}"},
        },
        "validate_only": False,
    }


def twilio_form(i: int) -> dict:
    """What the twilio client posts for one of our messages."""
    return {
        "To": f"+1415{i:07d}",
        "From": FROM_NUMBER,
        "Body": f"Reminder: Haircut slot {i}",
        "StatusCallback": f"{CALLBACK_URL}?delivery={uuid.UUID(int=i)}",
    }


def request_body(kind: str, i: int) -> bytes:
    if kind == "send":
        return json.dumps(send_body(i)).encode()
    if kind == "fcm":
        return json.dumps(fcm_message(i)).encode()
    if kind == "webhook":
        return json.dumps({"type": "delivery.sent", "data": {"delivery_id": str(uuid.UUID(int=i))}}).encode()
    return urlencode(twilio_form(i)).encode()


def drive(spec: dict, index_lists: list[list[int]], wait_go) -> dict:
    """One thread per index list, each with its own keep-alive Session, POSTing one body per
    index; bodies are built before the clock starts. Returns the latencies, errors, the
    monotonic window and this process's CPU seconds (all its threads) over the window."""
    bodies = [[request_body(spec["kind"], i) for i in indices] for indices in index_lists]
    latencies: list[list[float]] = [[] for _ in bodies]
    errors: list[str] = []
    ready = threading.Barrier(len(bodies) + 1)

    def client(k: int) -> None:
        session = requests.Session()
        session.trust_env = False  # no proxy or netrc look-ups per request: a leaner client
        session.headers.update(spec["headers"])
        if spec["auth"]:
            session.auth = tuple(spec["auth"])
        ready.wait()
        for body in bodies[k]:
            t0 = time.perf_counter()
            try:
                response = session.post(spec["url"], data=body, timeout=30)
            except requests.RequestException as exc:
                errors.append(f"{exc.__class__.__name__}: {exc}")
                continue
            latencies[k].append(time.perf_counter() - t0)
            if response.status_code != spec["expect"]:
                errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
        session.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(len(bodies))]
    for thread in threads:
        thread.start()
    wait_go()
    cpu0, start = time.process_time(), time.perf_counter()
    ready.wait()
    for thread in threads:
        thread.join()
    return {
        "start": start,
        "end": time.perf_counter(),
        "cpu": time.process_time() - cpu0,
        "latencies": [value for part in latencies for value in part],
        "errors": errors[:20],
        "error_count": len(errors),
    }


def drive_process(spec: dict, index_lists: list[list[int]], messages, go, release) -> None:
    def wait_go() -> None:
        messages.put(("ready", os.getpid()))
        go.wait()

    messages.put(("done", drive(spec, index_lists, wait_go)))
    release.wait(60)  # stay alive until the parent has read this process's CPU time


def drive_processes(spec: dict, groups: list[list[list[int]]], meter: CpuMeter) -> tuple[list[dict], dict]:
    """drive() in one spawned process per group, all started together once all are ready."""
    context = multiprocessing.get_context("spawn")
    messages, go, release = context.Queue(), context.Event(), context.Event()
    children = [
        context.Process(target=drive_process, args=(spec, group, messages, go, release), daemon=True)
        for group in groups
    ]
    for child in children:
        child.start()
    meter.add("clients", [child.pid for child in children])
    parts: list[dict] = []
    ready = 0
    while len(parts) < len(children):
        try:
            kind, payload = messages.get(timeout=1)
        except queue.Empty:
            if any(child.exitcode not in (None, 0) for child in children):
                raise BenchError("a client process died; see its traceback above") from None
            continue
        if kind == "ready":
            ready += 1
            if ready == len(children):
                meter.start()
                go.set()
        else:
            parts.append(payload)
    cores = meter.stop()  # before the children exit, or their CPU time would be lost
    release.set()
    for child in children:
        child.join(10)
    return parts, cores


def run_load(spec: dict, indices: range, *, clients: int, processes: int = 1, roots: dict | None = None) -> dict:
    """POST one body per index from `clients` threads, spread over `processes` processes
    (spawned, so they share nothing with this one). perf_counter is CLOCK_MONOTONIC, one
    clock for all processes: the window runs from the first start to the last end. With
    `roots`, a CpuMeter over them (and the client processes) covers the same window."""
    lists = [list(indices[k::clients]) for k in range(clients)]
    meter = CpuMeter(roots or {})
    if processes <= 1:
        parts = [drive(spec, lists, meter.start)]
        cores = meter.stop()
    else:
        parts, cores = drive_processes(spec, [lists[p::processes] for p in range(processes)], meter)
    seconds = max(part["end"] for part in parts) - min(part["start"] for part in parts)
    latencies = [value for part in parts for value in part["latencies"]]
    return {
        "requests": len(indices),
        "seconds": seconds,
        "rate": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "client_cores": sum(part["cpu"] for part in parts) / seconds,
        "client_processes": max(processes, 1),
        "cpu": cores,
        "errors": [error for part in parts for error in part["errors"]],
        "error_count": sum(part["error_count"] for part in parts),
    }


def client_check(load: dict) -> str:
    """Whether the client could be the bound: threads in one process share one GIL, so a
    process near one core of CPU is saturated."""
    per_process = load["client_cores"] / load["client_processes"]
    verdict = "not the bound" if per_process < 0.7 else "MAY BE THE BOUND (try --client-procs 2)"
    return (
        f"client: {load['client_cores']:.2f} cores over {load['client_processes']} process(es), "
        f"{load['client_cores'] / load['rate'] * 1000:.2f} ms CPU per request; "
        f"a process saturates at 1 core (GIL): {verdict}"
    )


# --- the database and the queue ----------------------------------------------------------


def tables_like(prefix: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
            [prefix.replace("_", r"\_") + "%"],
        )
        return [row[0] for row in cursor.fetchall()]


def truncate(tables: list[str], *, cascade: bool = False) -> None:
    from django.db import connection

    if tables:
        with connection.cursor() as cursor:
            names = ", ".join(connection.ops.quote_name(table) for table in tables)
            cursor.execute(f"TRUNCATE {names}{' CASCADE' if cascade else ''}")


def queue_size() -> int:
    from amqp.exceptions import ChannelError

    from config.celery import app

    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(os.environ["BEACON_QUEUE"], passive=True).message_count
        except ChannelError:  # Redis keeps no empty list: no queue is an empty queue
            return 0


def purge_queue() -> int:
    from config.celery import app

    with app.connection_for_write() as conn:
        return conn.default_channel.queue_purge(os.environ["BEACON_QUEUE"]) or 0


def reset_notifications() -> None:
    """Empty the notifications_* and preferences_* tables (as the catalogue has them now;
    preferences point at recipients) and the queue."""
    truncate(tables_like("notifications_") + tables_like("preferences_"))
    purge_queue()


def forget_queue() -> None:
    """Drop what this run's queue left in Redis: its list and kombu's binding sets (the
    exchange is named after the queue)."""
    import redis

    queue_name = os.environ["BEACON_QUEUE"]
    if os.environ["REDIS_URL"].startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        client.delete(queue_name, f"_kombu.binding.{queue_name}", f"_kombu.binding_permanent.{queue_name}")
        client.close()


# --- phase 1: single sends over HTTP -----------------------------------------------------


def phase_single(server: Gunicorn, raw: str, args) -> dict:
    spec = {
        "url": server.url + SEND_PATH,
        "kind": "send",
        "headers": {"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
        "auth": None,
        "expect": 202,
    }
    warmup = min(500, max(100, args.single // 10))
    log(f"single: warm-up of {warmup} sends, then {args.single:,} from {args.clients} clients ({server.description})")
    warm = run_load(spec, range(WARMUP_BASE, WARMUP_BASE + warmup), clients=args.clients, processes=args.client_procs)
    if warm.get("error_count"):
        raise BenchError(f"send/ refused the warm-up ({warm['error_count']} errors): {warm['errors'][0]}")
    reset_notifications()
    roots = {"gunicorn": server.process.pid}
    load = run_load(spec, range(args.single), clients=args.clients, processes=args.client_procs, roots=roots)
    if load["error_count"]:
        raise BenchError(f"send/ refused {load['error_count']} of {args.single}: {load['errors'][0]}")
    load["waiting_in_redis"] = queue_size()
    reset_notifications()
    log(
        f"single: {load['rate']:,.0f} req/s, p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms; "
        f"{load['waiting_in_redis']:,} messages were waiting in Redis"
    )
    return load


# --- phase 2: bulk accept over HTTP (also how phases 3 and 4 queue their deliveries) ------


def bulk_accept(server: Gunicorn, raw: str, n: int, *, args, measure_rss: bool = False, body=None) -> dict:
    """Accept n recipients in requests of args.per_request from args.bulk_clients threads
    (one connection per request, so that the kernel spreads them over the workers)."""
    from notifications.models import Delivery, DeliveryStatus

    url = server.url + BATCH_PATH
    headers = {"Authorization": f"Bearer {raw}", "Content-Type": "application/json", "Connection": "close"}
    work: queue.SimpleQueue = queue.SimpleQueue()
    for start in range(0, n, args.per_request):
        size = min(args.per_request, n - start)
        work.put((size, json.dumps((body or batch_body)(start, size)).encode()))
    failures: list[str] = []
    stop = threading.Event()

    def check(response: requests.Response, size: int) -> str | None:
        if response.status_code in (404, 405):
            return (
                f"POST {BATCH_PATH} answered {response.status_code}: the bulk-accept endpoint is not there yet "
                f'(expected: 202 {{"count": N, "notifications": [{{"id", "deliveries": [...]}}]}})'
            )
        if response.status_code != 202:
            return f"POST {BATCH_PATH} answered {response.status_code}: {response.text[:500]}"
        try:
            data = response.json()
            notifications = data["notifications"]
            queued = all(d["status"] == DeliveryStatus.QUEUED for item in notifications for d in item["deliveries"])
        except (ValueError, KeyError, TypeError) as exc:
            return f"POST {BATCH_PATH}: the 202 body is not as the contract says ({exc!r}): {response.text[:300]}"
        if data.get("count") != size or len(notifications) != size or not queued:
            return f"POST {BATCH_PATH}: asked for {size}, got count={data.get('count')}, {len(notifications)} items"
        return None

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.headers.update(headers)
            while not stop.is_set():
                try:
                    size, body = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    problem = check(session.post(url, data=body, timeout=120), size)
                except requests.RequestException as exc:
                    problem = f"POST {BATCH_PATH}: {exc.__class__.__name__}: {exc}"
                if problem:
                    failures.append(problem)
                    stop.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.bulk_clients)]
    sampler = RssSampler(server.process.pid)
    baseline_tree, baseline_single = sampler.sample()
    if measure_rss:
        sampler.start()
    meter = CpuMeter({"gunicorn": server.process.pid}).start()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cores = meter.stop()
    peak_tree, peak_single = sampler.stop() if measure_rss else (0, 0)
    if failures:
        raise BenchError(failures[0])
    stored = Delivery.objects.filter(status=DeliveryStatus.QUEUED).count()
    if stored != n:
        raise BenchError(f"bulk accept answered 202 for {n:,} recipients but {stored:,} deliveries are queued")
    return {
        "n": n,
        "seconds": seconds,
        "rate": n / seconds,
        "rss_single_mb": peak_single / 1024,
        "rss_tree_mb": peak_tree / 1024,
        "rss_baseline_single_mb": baseline_single / 1024,
        "rss_baseline_tree_mb": baseline_tree / 1024,
        "cpu": cores,
    }


def phase_bulk(server: Gunicorn, raw: str, args) -> dict:
    log(f"bulk: {args.bulk:,} recipients in requests of {args.per_request:,} from {args.bulk_clients} clients")
    result = bulk_accept(server, raw, args.bulk, args=args, measure_rss=True)
    log(f"bulk: {result['rate']:,.0f} notifications/s, peak RSS {result['rss_single_mb']:.0f} MB (largest process)")
    return result


# --- phases 3 and 4: dispatch by real Celery workers -------------------------------------


def drain(n: int, provider: str, args, roots: dict, env: dict | None = None) -> dict:
    """Start the workers on the n queued deliveries and wait until all are sent or failed.
    `env` is the worker's provider settings (default: BEACON_SMS_PROVIDER=provider)."""
    from django.db.models import Count, Max, Min

    from notifications.models import Delivery, DeliveryStatus
    from tests.worker import Worker

    queued = Delivery.objects.filter(status=DeliveryStatus.QUEUED).count()
    if queued != n:
        raise BenchError(f"expected {n:,} queued deliveries before the drain, found {queued:,}")
    env = {**os.environ, **(env or {"BEACON_SMS_PROVIDER": provider}), "LOG_LEVEL": "WARNING"}
    log_path = VAR / f"bench-worker-{provider}.log"
    spawned = datetime.now(UTC)
    worker = Worker(env, os.environ["BEACON_QUEUE"], log_path, concurrency=args.workers, loglevel="WARNING")
    worker.start(wait_ready=False)
    sampler = RssSampler(worker.process.pid).start()
    meter = CpuMeter({"celery": worker.process.pid, **roots}).start()
    finished = [DeliveryStatus.SENT, DeliveryStatus.FAILED]
    deadline = time.monotonic() + args.timeout
    try:
        # Counting finished rows gets dearer as they pile up (an index full of versions no
        # vacuum has cleared yet): ask Redis first, and the database once the queue is empty.
        while queue_size() or Delivery.objects.filter(status__in=finished).count() < n:
            if worker.exited() is not None:
                raise BenchError(f"the worker exited with {worker.exited()}; {log_path}:\n{worker.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                statuses = dict(Delivery.objects.values_list("status").annotate(Count("id")))
                raise BenchError(f"not finished after {args.timeout:.0f} s ({statuses}); see {log_path}")
            time.sleep(1)  # how often to look; the figures come from sent_at, not from this
        cores = meter.stop()
    finally:
        worker.stop()
        peak_tree, peak_single = sampler.stop()
    sent = Delivery.objects.filter(status=DeliveryStatus.SENT)
    window = sent.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    count = sent.count()
    failed = n - count
    if count == 0:
        raise BenchError(f"none of the {n:,} deliveries was sent ({failed:,} failed); see {log_path}")
    from_spawn = (window["last"] - spawned).total_seconds()
    drain_seconds = max((window["last"] - window["first"]).total_seconds(), 1e-6)
    result = {
        "n": n,
        "sent": count,
        "failed": failed,
        "from_spawn_s": from_spawn,
        "drain_s": drain_seconds,
        "start_s": (window["first"] - spawned).total_seconds(),
        "rate": count / from_spawn,
        "drain_rate": count / drain_seconds,
        "rss_single_mb": peak_single / 1024,
        "rss_tree_mb": peak_tree / 1024,
        "cpu": cores,
    }
    log(
        f"{provider} dispatch of {n:,}: {result['rate']:,.0f}/s from worker spawn ({from_spawn:.1f} s), "
        f"{result['drain_rate']:,.0f}/s first to last sent_at ({drain_seconds:.1f} s); {failed:,} not sent"
    )
    if failed:
        raise BenchError(f"{failed:,} of {n:,} deliveries were not sent; see {log_path}")
    return result


def provider_ready(kind: str) -> None:
    """Fail early when settings do not know the provider kind (else the worker would not start)."""
    from django.conf import settings

    choices = getattr(settings, "PROVIDER_CHOICES", None)
    if choices is not None and kind not in choices.get("sms", ()):
        raise BenchError(f"BEACON_SMS_PROVIDER={kind} is not a provider kind yet (sms: {sorted(choices['sms'])})")


def phase_null(server: Gunicorn, raw: str, args, roots: dict, *, queued: int) -> dict:
    """Drain the args.bulk deliveries queued by phase 2 (queued here if it did not run),
    then args.small more."""
    provider_ready(args.null_kind)
    results = {}
    for n in (args.bulk, args.small):
        if queued != n:
            reset_notifications()
            log(f"null: queueing {n:,} deliveries through {BATCH_PATH}")
            bulk_accept(server, raw, n, args=args)
        log(f"null: draining {n:,} with {args.workers} worker processes")
        results[n] = drain(n, args.null_kind, args, roots)
        queued = 0
    return {"big": results[args.bulk], "small": results[args.small]}


def phase_twilio(server: Gunicorn, raw: str, args, roots: dict) -> dict:
    reset_notifications()
    log(f"twilio: queueing {args.twilio:,} deliveries through {BATCH_PATH}")
    bulk_accept(server, raw, args.twilio, args=args)
    log(f"twilio: draining {args.twilio:,} through the twilio client to the double")
    return drain(args.twilio, "twilio", args, roots)


def bare_ceiling(spec: dict, n: int, *, label: str, server: str, server_pid: int) -> dict:
    """What a bare keep-alive client reaches against the same server, in the same sitting:
    2 processes, after a warm-up of 200 requests; `server` names its CPU line."""
    log(f"{label}: warm-up, then {n:,} POSTs to the {server} from 2 processes")
    run_load(spec, range(WARMUP_BASE, WARMUP_BASE + 200), clients=2, processes=2)
    load = run_load(spec, range(n), clients=2, processes=2, roots={server: server_pid})
    if load["error_count"]:
        raise BenchError(f"the {server} refused {load['error_count']} bare requests: {load['errors'][0]}")
    log(f"{label}: {load['rate']:,.0f} req/s")
    return load


def phase_bare(double_url: str, double_pid: int, args) -> dict:
    spec = {
        "url": f"{double_url}/2010-04-01/Accounts/{SID}/Messages.json",
        "kind": "twilio",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "auth": (SID, TOKEN),
        "expect": 201,
    }
    return bare_ceiling(spec, args.twilio, label="bare client", server="double", server_pid=double_pid)


def devices_register(n: int) -> None:
    """Recipients bench-0 .. bench-(n-1), each with one Android device, written in bulk
    (what n apps' registrations leave behind); not measured."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from notifications.models import Device, Recipient
    from notifications.services.devices import token_hash

    account = get_user_model().objects.get(username="bench")
    now = timezone.now()
    for start in range(0, n, 5000):
        stop = min(start + 5000, n)
        recipients = Recipient.objects.bulk_create(
            [Recipient(account=account, external_id=f"bench-{i}") for i in range(start, stop)]
        )
        Device.objects.bulk_create(
            [
                Device(
                    account=account,
                    recipient=recipient,
                    platform="android",
                    token=f"bench-token-{i}",
                    token_hash=token_hash(f"bench-token-{i}"),
                    last_seen_at=now,
                )
                for i, recipient in zip(range(start, stop), recipients, strict=True)
            ]
        )


def phase_push(server: Gunicorn, raw: str, args, roots: dict, fcm_url: str, fcm_account: str) -> dict:
    reset_notifications()
    log(f"push: registering {args.push:,} devices, then queueing a push to each through {BATCH_PATH}")
    devices_register(args.push)
    bulk_accept(server, raw, args.push, args=args, body=push_batch_body)
    log(f"push: draining {args.push:,} through pyfcm to the FCM double")
    env = {
        "BEACON_PUSH_PROVIDER": "fcm",
        "FCM_SERVICE_ACCOUNT_JSON": fcm_account,
        "FCM_API_BASE_URL": fcm_url,
    }
    return drain(args.push, "fcm", args, roots, env=env)


def fcm_token(fcm_account: str) -> str:
    """An OAuth token from the double's token endpoint, as google-auth gets it."""
    import google.auth.transport.requests
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_info(
        json.loads(fcm_account), scopes=["https://www.googleapis.com/auth/firebase.messaging"]
    )
    credentials.refresh(google.auth.transport.requests.Request())
    return credentials.token


def phase_push_bare(fcm_url: str, fcm_pid: int, fcm_account: str, args) -> dict:
    spec = {
        "url": f"{fcm_url}/v1/projects/{FCM_PROJECT}/messages:send",
        "kind": "fcm",
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {fcm_token(fcm_account)}"},
        "auth": None,
        "expect": 200,
    }
    return bare_ceiling(spec, args.push, label="push bare client", server="fcm", server_pid=fcm_pid)


# --- phase 5: the peer -------------------------------------------------------------------


def peer_env(base_env: dict, results_dir: Path) -> dict:
    env = {k: v for k, v in base_env.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(REPS="1", SIZES="10000 100000", LOOP_SIZES="1000", RESULTS_DIR=str(results_dir))
    return env


def run_peer(peer_dir: Path, results_dir: Path, base_env: dict) -> None:
    script = peer_dir / "run_bench.sh"
    if not script.exists():
        raise BenchError(f"no peer benchmark at {script}")
    env = peer_env(base_env, results_dir)
    log_path = VAR / "bench-peer.log"
    with open(log_path, "w") as peer_log:
        if not (PEER_BASE / "venv" / "bin" / "python").exists():
            log(f"peer: {PEER_BASE}/venv is missing: running its setup first")
            subprocess.run(
                ["bash", str(script), "setup"], env=env, stdout=peer_log, stderr=subprocess.STDOUT, check=True
            )
        shutil.rmtree(results_dir, ignore_errors=True)
        results_dir.mkdir(parents=True)
        log(f"peer: post_office send_many/deliver at 10k and 100k, send loop at 1k (about 5 minutes) -> {results_dir}")
        done = subprocess.run(["bash", str(script), "po"], env=env, stdout=peer_log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise BenchError(f"the peer exited with {done.returncode}; see {log_path}")


def read_peer(peer_dir: Path, results_dir: Path, base_env: dict) -> dict[str, dict]:
    """The peer's figures per workload (po_send_many_100000, ...), from its raw.csv."""
    summary = subprocess.run(
        ["bash", str(peer_dir / "run_bench.sh"), "summary"],
        env=peer_env(base_env, results_dir),
        capture_output=True,
        text=True,
    )
    if summary.returncode or not (results_dir / "raw.csv").exists():
        raise BenchError(f"the peer's summary failed: {summary.stderr[-2000:]}")
    rows: dict[str, list[dict]] = {}
    with open(results_dir / "raw.csv") as raw:
        for row in csv.DictReader(raw):
            if row.get("ok") == "True" and row.get("rate"):
                rows.setdefault(row["workload"], []).append(row)

    def median(group: list[dict], key: str) -> float | None:
        values = [float(row[key]) for row in group if row.get(key)]
        return statistics.median(values) if values else None

    return {
        workload: {key: median(group, key) for key in ("rate", "time_s", "maxrss_kb", "tree_rss_kb")}
        for workload, group in rows.items()
    }


# --- the table -----------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def ratio(ours: float | None, peer: float | None) -> float | None:
    return ours / peer if ours and peer else None


class Table:
    """Rows of (figure, ours, peer's figure, ratio, goal and verdict)."""

    def __init__(self, peer: dict):
        self.peer, self.rows = peer, []

    def add(self, figure: str, ours: str, peer: str = "-", times: float | None = None, goal: str = "", met=None):
        verdict = "" if met is None else ("  ok" if met else "  MISSED")
        self.rows.append((figure, ours, peer, fmt(times, ".2f", "x"), goal + verdict))

    def peer_figure(self, workload: str, key: str = "rate") -> tuple[float | None, str]:
        """The peer's figure (RSS in MB) and how to show it."""
        value = (self.peer.get(workload) or {}).get(key)
        if value is None:
            return None, "-"
        if key == "maxrss_kb":
            return value / 1024, f"{value / 1024:,.0f} MB ({workload})"
        return value, f"{value:,.0f} ({workload})"

    def print(self) -> None:
        header = ("figure", "ours", "peer (post_office)", "ratio", "goal")
        widths = [max(len(row[i]) for row in [header, *self.rows]) for i in range(5)]
        for row in [header, *self.rows]:
            cells = [cell.rjust(widths[i]) if i in (1, 3) else cell.ljust(widths[i]) for i, cell in enumerate(row)]
            print("  ".join(cells).rstrip())


def table_single(table: Table, single: dict, clients: int) -> None:
    peer, text = table.peer_figure("po_send_loop_1000")
    rate, p99 = single["rate"], single["p99_ms"]
    table.add(f"single accept, req/s ({clients} clients)", fmt(rate), text, ratio(rate, peer), ">= 400", rate >= 400)
    latency = f"{single['p50_ms']:.1f} / {p99:.1f} ms"
    table.add("  latency p50 / p99", latency, goal="p99 <= 30 ms", met=p99 <= 30)


def table_bulk(table: Table, bulk: dict) -> None:
    workload = f"po_send_many_{bulk['n']}" if f"po_send_many_{bulk['n']}" in table.peer else "po_send_many_100000"
    peer, text = table.peer_figure(workload)
    times = ratio(bulk["rate"], peer)
    met = None if times is None else times >= 3
    table.add(f"bulk accept {bulk['n']:,}, notifications/s", fmt(bulk["rate"]), text, times, ">= 3x peer", met)
    peer, text = table.peer_figure(workload, "maxrss_kb")
    rss = bulk["rss_single_mb"]
    table.add("  peak RSS, largest gunicorn process", f"{rss:,.0f} MB", text, ratio(peer, rss), "< 200 MB", rss < 200)
    table.add("  peak RSS, gunicorn tree (summed)", f"{bulk['rss_tree_mb']:,.0f} MB")


def table_null(table: Table, big: dict, small: dict) -> None:
    peer, text = table.peer_figure("po_deliver_p1_100000")
    times = ratio(big["rate"], peer)
    met = None if times is None else times >= 5
    table.add(f"null dispatch {big['n']:,}, delivered/s *", fmt(big["rate"]), text, times, ">= 5x peer", met)
    table.add("  first to last sent_at, delivered/s", fmt(big["drain_rate"]))
    peer, text = table.peer_figure("po_deliver_p1_10000")
    table.add(f"null dispatch {small['n']:,}, delivered/s *", fmt(small["rate"]), text, ratio(small["rate"], peer))
    table.add("  first to last sent_at, delivered/s", fmt(small["drain_rate"]))
    scale = big["drain_s"] / small["drain_s"]
    peer_big, _ = table.peer_figure("po_deliver_p1_100000", "time_s")
    peer_small, _ = table.peer_figure("po_deliver_p1_10000", "time_s")
    peer_scale = ratio(peer_big, peer_small)
    label = f"  time {big['n']:,} / {small['n']:,} (drain windows)"
    text = fmt(peer_scale, ".2f", " (po_deliver_p1 wall times)")
    table.add(label, f"{scale:.2f}", text, ratio(peer_scale, scale), "<= 10.5", scale <= 10.5)
    peer, text = table.peer_figure("po_deliver_p1_100000", "maxrss_kb")
    rss = f"{big['rss_single_mb']:,.0f} / {big['rss_tree_mb']:,.0f} MB"
    table.add("  worker peak RSS, largest / tree", rss, text, ratio(peer, big["rss_single_mb"]))


def table_twilio(table: Table, twilio: dict | None, bare: dict | None) -> None:
    if twilio:
        table.add(f"twilio dispatch {twilio['n']:,}, delivered/s *", fmt(twilio["rate"]))
        table.add("  first to last sent_at, delivered/s", fmt(twilio["drain_rate"]))
    if bare:
        table.add(f"bare client ceiling {bare['requests']:,}, req/s", fmt(bare["rate"]))
    if twilio and bare:
        share = twilio["drain_rate"] / bare["rate"]
        table.add("  twilio dispatch / bare ceiling", f"{share:.0%}", goal=">= 60%", met=share >= 0.6)


def table_push(table: Table, push: dict | None, bare: dict | None) -> None:
    if push:
        peer, text = table.peer_figure("po_deliver_p1_10000")
        table.add(
            f"push (FCM) dispatch {push['n']:,}, delivered/s *", fmt(push["rate"]), text, ratio(push["rate"], peer)
        )
        table.add("  first to last sent_at, delivered/s", fmt(push["drain_rate"]))
    if bare:
        table.add(f"FCM bare client ceiling {bare['requests']:,}, req/s", fmt(bare["rate"]))
    if push and bare:
        table.add("  push dispatch / bare ceiling", f"{push['drain_rate'] / bare['rate']:.0%}")


def notes(results: dict, errors: dict, args) -> list[str]:
    """What bounds each figure (CPU per group, client checks), and the errors."""
    lines = []
    if single := results.get("single"):
        lines += [
            "single: the peer's figure is its send loop in-process (no HTTP, no auth)",
            f"single: {client_check(single)}",
            f"single: {cpu_line(single['cpu'])}",
            f"single: {single['waiting_in_redis']:,} task messages were waiting in Redis (purged)",
        ]
    if bulk := results.get("bulk"):
        before = f"{bulk['rss_baseline_single_mb']:.0f} MB largest, {bulk['rss_baseline_tree_mb']:.0f} MB tree"
        lines += [f"bulk: {bulk['seconds']:.1f} s; RSS before: {before}", f"bulk: {cpu_line(bulk['cpu'])}"]
    if null := results.get("null"):
        for part in (null["big"], null["small"]):
            timing = f"spawn to first sent {part['start_s']:.1f} s, drain {part['drain_s']:.1f} s"
            lines += [f"null {part['n']:,}: {timing}; {cpu_line(part['cpu'])}"]
    if twilio := results.get("twilio"):
        lines += [f"twilio: {cpu_line(twilio['cpu'])}"]
    if bare := results.get("bare"):
        lines += [f"bare: {client_check(bare)}", f"bare: {cpu_line(bare['cpu'])}"]
    if twilio or bare:
        lines += [
            "twilio/bare: the double is a Python HTTP server on the same two cores as its senders (celery, "
            "clients): the machine's CPU bounds both figures, and the cpu lines show each one's share"
        ]
    if push := results.get("push"):
        lines += [
            f"push: spawn to first sent {push['start_s']:.1f} s; {cpu_line(push['cpu'])}",
            "push: the peer sends email through a dummy backend (its dispatch of 10,000): the ratio compares "
            "queue-to-provider throughput across channels, not like for like",
        ]
    if push_bare := results.get("push_bare"):
        lines += [f"push bare: {client_check(push_bare)}", f"push bare: {cpu_line(push_bare['cpu'])}"]
    if source := results.get("peer_source"):
        sitting = "an earlier sitting (--peer-results)" if args.peer_results else "this sitting"
        lines += [f"peer: post_office, {sitting}, from {source}"]
    return lines + [f"ERROR in {name}: {message}" for name, message in errors.items()]


def report(results: dict, peer: dict, errors: dict, args) -> None:
    table = Table(peer)
    if "single" in results:
        table_single(table, results["single"], args.clients)
    if "bulk" in results:
        table_bulk(table, results["bulk"])
    if "null" in results:
        table_null(table, results["null"]["big"], results["null"]["small"])
    table_twilio(table, results.get("twilio"), results.get("bare"))
    table_push(table, results.get("push"), results.get("push_bare"))
    server = results.get("server", "no gunicorn")
    print(
        f"\nBeacon bench, {datetime.now():%Y-%m-%d %H:%M}, {CPU_COUNT} cores, {server}, {args.workers} worker processes"
    )
    print("ratio: ours/peer for rates, peer/ours for RSS and time ratios (above 1 is better)")
    print("* delivered/s = sent / (last sent_at - worker spawn); the row under it: first to last sent_at")
    table.print()
    print()
    print("\n".join(notes(results, errors, args)))


def report_peer(peer: dict, results: dict, errors: dict) -> None:
    print(f"\npost_office, from {results.get('peer_source')}")
    print(f"{'workload':24} {'rate /s':>9} {'time s':>8} {'RSS MB largest / tree':>22}")
    for workload, figures in sorted(peer.items()):
        rss = f"{fmt(kb_to_mb(figures['maxrss_kb']))} / {fmt(kb_to_mb(figures['tree_rss_kb']))}"
        print(f"{workload:24} {fmt(figures['rate']):>9} {fmt(figures['time_s'], '.2f'):>8} {rss:>22}")
    for name, message in errors.items():
        print(f"ERROR in {name}: {message}")


def kb_to_mb(kb: float | None) -> float | None:
    return kb / 1024 if kb else None


# --- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("-n", type=int, help="a quick run: every size N (the small dispatch N/10)")
    sizes.add_argument("--single", type=int, default=10_000, help="single sends measured (default 10000)")
    sizes.add_argument("--bulk", type=int, default=100_000, help="bulk-accepted, then dispatched (default 100000)")
    sizes.add_argument("--small", type=int, help="the smaller dispatch run (default bulk/10)")
    sizes.add_argument("--twilio", type=int, default=20_000, help="dispatched to the double, and bare requests (20000)")
    sizes.add_argument("--push", type=int, default=20_000, help="push deliveries to the FCM double, and bare (20000)")
    setup = parser.add_argument_group("setup")
    setup.add_argument("--clients", type=int, default=8, help="concurrent single-send clients (default 8)")
    setup.add_argument("--client-procs", type=int, default=1, help="processes the single-send clients run in (1)")
    setup.add_argument("--bulk-clients", type=int, default=2, help="concurrent bulk-accept clients (default 2)")
    setup.add_argument("--per-request", type=int, default=1000, help="recipients per batch request (default 1000)")
    setup.add_argument("--web-workers", type=int, default=WEB_WORKERS, help=f"gunicorn workers ({WEB_WORKERS})")
    setup.add_argument(
        "--web-threads", type=int, default=WEB_THREADS, help=f"threads per worker, >1 = gthread ({WEB_THREADS})"
    )
    setup.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    setup.add_argument("--null-kind", default="console", help="the no-network sms provider kind of phase 3")
    setup.add_argument("--timeout", type=float, default=900, help="seconds to wait for one drain (default 900)")
    parts = parser.add_argument_group("parts")
    for name in ("single", "bulk", "null", "twilio", "push"):
        parts.add_argument(f"--skip-{name}", action="store_true", help=f"leave phase {name} out")
    parts.add_argument("--no-peer", action="store_true", help="do not run the peer (no ratios)")
    parts.add_argument("--peer-only", action="store_true", help="run the peer alone and print its figures")
    parts.add_argument(
        "--peer-results", type=Path, help="read the peer's figures from this results directory instead of running it"
    )
    parts.add_argument("--peer-dir", type=Path, default=PEER_DIR, help=f"the peer benchmark ({PEER_DIR})")
    args = parser.parse_args()
    if args.n:
        args.single = args.bulk = args.twilio = args.push = args.n
    args.small = args.small or max(args.bulk // 10, 1)
    if args.peer_only:
        args.skip_single = args.skip_bulk = args.skip_null = args.skip_twilio = args.skip_push = True
    return args


def run_ours(args, results: dict, errors: dict) -> None:
    ensure_database(os.environ["DATABASE_URL"])
    VAR.mkdir(exist_ok=True)
    double, double_url, _ = start_double("twilio")
    fcm, fcm_url, fcm_account = start_double("fcm")
    os.environ.update(
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE_URL=double_url,
        BEACON_SMS_PROVIDER="twilio",
    )
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.services import api_token_issue
    from tests.factories import REMINDER_CONTENTS, make_template

    call_command("migrate", verbosity=0)
    truncate([*tables_like("notifications_"), *tables_like("templates_"), "accounts_apitoken"], cascade=True)
    purge_queue()
    token, raw = api_token_issue(username="bench", create=True)
    push_content = {
        "channel": "push",
        "subject": "Reminder: {{ event_name }}",
        "body": "{{ event_name }} {{ start_time }}",
    }
    make_template(token.account, key="bench", contents=[*REMINDER_CONTENTS, push_content])

    server = Gunicorn(
        os.environ.copy(), workers=args.web_workers, threads=args.web_threads, log_path=VAR / "bench-gunicorn.log"
    )
    roots = {"double": double.pid, "fcm": fcm.pid, "gunicorn": None}

    def part(name: str, function, *arguments, **keywords) -> None:
        try:
            results[name] = function(*arguments, **keywords)
        except BenchError as exc:
            errors[name] = str(exc)
            log(f"{name}: FAILED: {exc}")
        except Exception:  # noqa: BLE001 - report it and go on with the other phases
            errors[name] = traceback.format_exc(limit=-3)
            log(f"{name}: FAILED:\n{errors[name]}")
        finally:
            try:
                reset_notifications()
            except Exception as exc:  # noqa: BLE001
                log(f"could not empty the tables after {name}: {exc}")

    try:
        needs_server = not all((args.skip_single, args.skip_bulk, args.skip_null, args.skip_twilio, args.skip_push))
        if needs_server:
            server.start()
            roots["gunicorn"] = server.process.pid
            results["server"] = server.description
        if not args.skip_single:
            part("single", phase_single, server, raw, args)
        queued = 0
        if not args.skip_bulk or not args.skip_null:
            try:
                results["bulk"] = phase_bulk(server, raw, args)
                queued = args.bulk
            except BenchError as exc:
                errors["bulk"] = str(exc)
                log(f"bulk: FAILED: {exc}")
                reset_notifications()
        if not args.skip_null:
            part("null", phase_null, server, raw, args, roots, queued=queued)
        if not args.skip_twilio:
            part("twilio", phase_twilio, server, raw, args, roots)
            part("bare", phase_bare, double_url, double.pid, args)
        if not args.skip_push:
            part("push", phase_push, server, raw, args, roots, fcm_url, fcm_account)
            part("push_bare", phase_push_bare, fcm_url, fcm.pid, fcm_account, args)
    finally:
        server.stop()
        for process in (double, fcm):
            process.terminate()
            process.join(10)
        purge_queue()
        forget_queue()


def main() -> int:
    base_env = dict(os.environ)
    args = parse_args()
    configure_environment()
    if not os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
        sys.exit("the bench runs on PostgreSQL: set DATABASE_URL to a postgres:// URL")
    results: dict = {}
    errors: dict = {}
    if not args.peer_only:
        run_ours(args, results, errors)
    peer: dict = {}
    if not args.no_peer or args.peer_results:
        results_dir = args.peer_results or PEER_BASE / "results" / "beacon-bench"
        try:
            if not args.peer_results:
                run_peer(args.peer_dir, results_dir, base_env)
            peer = read_peer(args.peer_dir, results_dir, base_env)
            results["peer_source"] = results_dir
        except (BenchError, subprocess.CalledProcessError) as exc:
            errors["peer"] = str(exc)
    if args.peer_only:
        report_peer(peer, results, errors)
    else:
        report(results, peer, errors, args)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
