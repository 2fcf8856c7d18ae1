#!/usr/bin/env python
"""Outbound webhooks and the inbox's live streams, measured on PostgreSQL and Redis.

1. webhooks  --webhooks (5,000) pending webhook messages for one endpoint, posted signed
             by a real `celery worker -c 2` to a local receiver (a threaded HTTP server on
             loopback, in a process of its own, answering 200), the messages handed to
             the worker in batches of BEACON_WEBHOOK_BATCH_SIZE as the event hook does.
             posts/s = delivered / (last delivered_at - worker spawn). Beside it, in the
             same sitting, a bare-client ceiling: 2 processes with keep-alive sessions
             POSTing the same signed bodies to the same receiver.
2. streams   --streams (100) server-sent-event clients connected to the inbox stream of
             uvicorn (config.asgi) for 100 recipients, then --rounds (20) in-app sends to
             each recipient, accepted in batches and dispatched by the worker, which
             stores each item and publishes it on Redis; uvicorn passes it to the stream.
             messages/s = items received over all streams / (last receipt - first send).

Usage: python scripts/bench_webhooks_inbox.py [--webhooks N] [--streams N] [--rounds N]
DATABASE_URL and REDIS_URL as for scripts/bench.py (default: beacon_bench, Redis db 14).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import (  # noqa: E402
    VAR,
    BenchError,
    CpuMeter,
    bare_ceiling,
    configure_environment,
    cpu_line,
    ensure_database,
    forget_queue,
    free_port,
    purge_queue,
    tables_like,
    truncate,
)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# --- the receiver ------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def serve_receiver(port_queue) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port_queue.put(server.server_address[1])
    signal.sigwait([signal.SIGTERM])


def start_receiver() -> tuple[multiprocessing.Process, str]:
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    port_queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve_receiver, args=(port_queue,), daemon=True)
    process.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    return process, f"http://127.0.0.1:{port_queue.get(timeout=20)}/hooks/beacon"


# --- setup -------------------------------------------------------------------------------


def setup():
    configure_environment()
    os.environ.update(LOG_LEVEL="WARNING", BEACON_ALLOW_PRIVATE_TARGETS="true")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    truncate([*tables_like("notifications_"), *tables_like("preferences_"), "accounts_apitoken"], cascade=True)
    purge_queue()
    from accounts.services import api_token_issue

    token, raw = api_token_issue(username="bench-hooks", create=True)
    return token.account, raw


def worker(name: str, loglevel: str = "WARNING"):
    from tests.worker import Worker

    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    return Worker(env, os.environ["BEACON_QUEUE"], VAR / f"bench-worker-{name}.log", concurrency=2, loglevel=loglevel)


# --- 1. webhooks -------------------------------------------------------------------------


def phase_webhooks(account, n: int, url: str, receiver_pid: int) -> dict:
    from django.conf import settings
    from django.db.models import Max
    from django.utils import timezone

    from notifications.models import WebhookMessage, WebhookMessageStatus
    from notifications.services.webhooks import endpoint_create
    from notifications.tasks import webhook_messages_send

    endpoint, secret = endpoint_create(account=account, url=url, event_types=["*"])
    now = timezone.now()
    messages = [
        WebhookMessage(
            id=uuid.uuid4(),
            account=account,
            endpoint=endpoint,
            event_type="delivery.sent",
            payload={"type": "delivery.sent", "timestamp": now.isoformat(), "data": {"delivery_id": str(uuid.uuid4())}},
            next_attempt_at=now,
            created_at=now,
        )
        for _ in range(n)
    ]
    WebhookMessage.objects.bulk_create(messages, batch_size=1000)
    ids = [str(m.pk) for m in messages]
    size = settings.BEACON_WEBHOOK_BATCH_SIZE
    for start in range(0, n, size):
        webhook_messages_send.delay(ids[start : start + size])
    log(f"webhooks: {n:,} messages queued in tasks of {size}; starting the worker")
    spawned = datetime.now(UTC)
    hooks_worker = worker("webhooks").start(wait_ready=False)
    meter = CpuMeter({"celery": hooks_worker.process.pid, "receiver": receiver_pid}).start()
    deadline = time.monotonic() + 600
    try:
        while WebhookMessage.objects.filter(status=WebhookMessageStatus.DELIVERED).count() < n:
            if hooks_worker.exited() is not None or time.monotonic() > deadline:
                raise BenchError(f"webhooks not all delivered; see {hooks_worker.log_path}")
            time.sleep(0.5)
        cores = meter.stop()
    finally:
        hooks_worker.stop()
    last = WebhookMessage.objects.aggregate(last=Max("delivered_at"))["last"]
    seconds = (last - spawned).total_seconds()
    result = {"n": n, "seconds": seconds, "rate": n / seconds, "cpu": cores, "secret": secret}
    log(f"webhooks: {result['rate']:,.0f} posts/s from worker spawn ({seconds:.1f} s)")
    return result


def phase_webhooks_bare(n: int, url: str, secret: str, receiver_pid: int) -> dict:
    from providers.webhook import encode, signed_headers

    body = encode({"type": "delivery.sent", "timestamp": datetime.now(UTC).isoformat(), "data": {}})
    spec = {
        "url": url,
        "kind": "webhook",
        "headers": signed_headers([secret], "msg_bench", body),
        "auth": None,
        "expect": 200,
    }
    return bare_ceiling(spec, n, label="webhooks bare client", server="receiver", server_pid=receiver_pid)


# --- 2. streams --------------------------------------------------------------------------


def start_uvicorn(port: int) -> subprocess.Popen:
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    log_file = open(VAR / "bench-uvicorn.log", "w")  # noqa: SIM115 - the process keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port), "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/notifications/health/", timeout=2)
            return process
        except requests.RequestException:
            time.sleep(0.2)
    raise BenchError("uvicorn did not start; see var/bench-uvicorn.log")


def listen(url: str, raw: str, expected: int, received: list, ready: threading.Barrier) -> None:
    """One stream: count its items and note when each arrived."""
    import sseclient

    response = requests.get(
        url, headers={"Authorization": f"Bearer {raw}", "Accept": "text/event-stream"}, stream=True, timeout=120
    )
    ready.wait()
    count = 0
    for event in sseclient.SSEClient(response).events():
        if event.event == "notification":
            received.append(time.monotonic())
            count += 1
            if count >= expected:
                break
    response.close()


def phase_streams(account, raw: str, streams: int, rounds: int) -> dict:
    from notifications.models import Recipient
    from notifications.services import notifications_accept_batch
    from notifications.services.accept import Item

    Recipient.objects.bulk_create([Recipient(account=account, external_id=f"stream-{i}") for i in range(streams)])
    port = free_port()
    server = start_uvicorn(port)
    stream_worker = worker("streams", "INFO").start()
    received: list[float] = []
    ready = threading.Barrier(streams + 1)
    clients = [
        threading.Thread(
            target=listen,
            args=(f"http://127.0.0.1:{port}/api/v1/inbox/stream/?recipient=stream-{i}", raw, rounds, received, ready),
            daemon=True,
        )
        for i in range(streams)
    ]
    meter = CpuMeter({"uvicorn": server.pid, "celery": stream_worker.process.pid}).start()
    try:
        for client in clients:
            client.start()
        ready.wait(timeout=60)
        time.sleep(1)  # the streams subscribe after their first bytes
        log(f"streams: {streams} connected; sending {rounds} in-app notifications to each")
        started = time.monotonic()
        for round_number in range(rounds):
            notifications_accept_batch(
                account=account,
                channels=["in_app"],
                items=[Item(recipient={"external_id": f"stream-{i}"}, context={}) for i in range(streams)],
                subject="Bench",
                message=f"Round {round_number}",
            )
        for client in clients:
            client.join(timeout=120)
        cores = meter.stop()
    finally:
        stream_worker.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
    total = streams * rounds
    if len(received) < total:
        raise BenchError(f"the streams received {len(received):,} of {total:,} items")
    seconds = max(received) - started
    result = {"n": total, "seconds": seconds, "rate": total / seconds, "cpu": cores}
    log(f"streams: {result['rate']:,.0f} messages/s to {streams} streams ({seconds:.1f} s from the first send)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhooks", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    VAR.mkdir(exist_ok=True)
    account, raw = setup()
    receiver, url = start_receiver()
    results, errors = {}, {}
    try:
        try:
            results["webhooks"] = phase_webhooks(account, args.webhooks, url, receiver.pid)
            results["bare"] = phase_webhooks_bare(args.webhooks, url, results["webhooks"]["secret"], receiver.pid)
        except BenchError as exc:
            errors["webhooks"] = str(exc)
        try:
            results["streams"] = phase_streams(account, raw, args.streams, args.rounds)
        except BenchError as exc:
            errors["streams"] = str(exc)
    finally:
        receiver.terminate()
        receiver.join(10)
        purge_queue()
        forget_queue()
    print(f"\nBeacon webhooks and inbox streams, {datetime.now():%Y-%m-%d %H:%M}")
    if hooks := results.get("webhooks"):
        print(
            f"webhook posts through a worker (-c 2), {hooks['n']:,}: {hooks['rate']:,.0f}/s  ({cpu_line(hooks['cpu'])})"
        )
    if bare := results.get("bare"):
        share = results["webhooks"]["rate"] / bare["rate"]
        print(f"bare client ceiling, same receiver: {bare['rate']:,.0f} req/s; ours / ceiling {share:.0%}")
    if streams := results.get("streams"):
        print(
            f"in-app items to {args.streams} live streams, {streams['n']:,}: {streams['rate']:,.0f} messages/s "
            f"({cpu_line(streams['cpu'])})"
        )
    for name, message in errors.items():
        print(f"ERROR in {name}: {message}")
    print(
        json.dumps(
            {
                k: {kk: vv for kk, vv in v.items() if kk not in ("cpu", "secret", "latencies")}
                for k, v in results.items()
            },
            default=str,
        )
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
