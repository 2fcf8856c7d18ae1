#!/usr/bin/env python
"""Push N templated SMS notifications through accept (the send API) and dispatch (real
Celery workers, the real twilio client) against a local Twilio double, on PostgreSQL and
Redis, and print accepted/s, delivered/s and the accept latency percentiles.

The two phases are measured apart on the 2-core machines: first every notification is
accepted while no worker runs (they wait in Redis), then the workers start and drain the
queue; delivered/s is N over the time from the first to the last provider acceptance.

    make bench                                  # N=10000 on the local PostgreSQL and Redis
    make bench BENCH_ARGS="-n 2000 --concurrency 2"

DATABASE_URL and REDIS_URL choose the services (defaults: a `beacon_bench` database on
127.0.0.1:5432 and Redis database 14 on 127.0.0.1:6379). The bench database's Beacon
tables are emptied before each run. "Delivered" means the provider accepted the message
(status `sent`); carrier receipts are not simulated.
"""

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/beacon_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["BEACON_QUEUE"] = f"beacon-bench-{uuid.uuid4().hex[:8]}"

SID, TOKEN = "AC" + "b" * 32, "bench-auth-token"


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


def serve_double(port_queue) -> None:
    from tests.doubles.twilio import TwilioDouble

    double = TwilioDouble(account_sid=SID, auth_token=TOKEN).start()
    port_queue.put(double.base_url)
    signal.sigwait([signal.SIGTERM])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10_000, help="notifications to send (default 10000)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for delivery")
    args = parser.parse_args()
    if not os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
        parser.error("the bench runs on PostgreSQL: set DATABASE_URL to a postgres:// URL")

    ensure_database(os.environ["DATABASE_URL"])
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    port_queue = multiprocessing.Queue()
    double = multiprocessing.Process(target=serve_double, args=(port_queue,), daemon=True)
    double.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    double_url = port_queue.get(timeout=10)
    provider_env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": double_url,
        "BEACON_SMS_PROVIDER": "twilio",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    os.environ.update(provider_env)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Max, Min
    from django.test import Client

    from accounts.services import api_token_issue
    from notifications.models import Delivery, DeliveryStatus
    from tests.factories import make_template
    from tests.worker import Worker

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE notifications_deliveryevent, notifications_deliveryattempt, notifications_idempotencykey, "
            "notifications_delivery, notifications_notification, notifications_recipient, "
            "templates_templatecontent, templates_templateversion, templates_template, accounts_apitoken CASCADE"
        )
    token, raw = api_token_issue(username="bench", create=True)
    make_template(token.account, key="bench")

    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    latencies = []
    refused = 0
    started = time.perf_counter()
    for n in range(args.n):
        body = json.dumps(
            {
                "channel": "sms",
                "recipient": {"phone": f"+1415{n:07d}", "external_id": f"bench-{n}"},
                "template": "bench",
                "context": {"event_name": "Haircut", "start_time": f"slot {n}"},
            }
        )
        t0 = time.perf_counter()
        response = client.post("/api/v1/notifications/send/", data=body, content_type="application/json")
        latencies.append(time.perf_counter() - t0)
        refused += response.status_code != 202
    accept_seconds = time.perf_counter() - started

    log_path = ROOT / "var" / "bench-worker.log"
    log_path.parent.mkdir(exist_ok=True)
    worker = Worker(
        os.environ.copy(), os.environ["BEACON_QUEUE"], log_path, concurrency=args.concurrency, loglevel="WARNING"
    ).start(wait_ready=False)
    try:
        deadline = time.monotonic() + args.timeout
        finished = [DeliveryStatus.SENT, DeliveryStatus.FAILED]
        while time.monotonic() < deadline:
            if Delivery.objects.filter(status__in=finished).count() >= args.n - refused:
                break
            if worker.exited() is not None:
                raise SystemExit(f"worker exited with {worker.exited()}; see {log_path}")
            time.sleep(0.2)
    finally:
        worker.stop()
        double.terminate()
    sent = Delivery.objects.filter(status=DeliveryStatus.SENT).count()
    failed = Delivery.objects.filter(status=DeliveryStatus.FAILED).count()
    window = Delivery.objects.filter(status=DeliveryStatus.SENT).aggregate(first=Min("sent_at"), last=Max("sent_at"))
    drain_seconds = max((window["last"] - window["first"]).total_seconds(), 1e-6) if sent else float("nan")

    print(f"notifications        {args.n} (refused {refused}), worker processes {args.concurrency}")
    print(f"accepted/s           {args.n / accept_seconds:,.0f}   ({accept_seconds:.1f}s for all)")
    print(
        f"accept latency       p50 {statistics.median(latencies) * 1000:.1f} ms   "
        f"p99 {percentile(latencies, 99) * 1000:.1f} ms"
    )
    print(
        f"delivered/s          {sent / drain_seconds:,.0f}   ({sent} sent, {failed} failed, "
        f"{drain_seconds:.1f}s from first to last provider acceptance)"
    )
    return 0 if sent == args.n and not refused else 1


if __name__ == "__main__":
    sys.exit(main())
