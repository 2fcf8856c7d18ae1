#!/usr/bin/env python
"""Pacing under a provider's rate limit, measured on PostgreSQL and Redis.

A Twilio double in a process of its own allows --limit (200) requests in any second plus
a burst of --burst (20), answering 429 beyond that, as Twilio does. An account's provider
record points at it with rate_limit_per_second = --limit and burst = --burst. --n (4,000)
SMS are accepted for that account and drained by a real `celery worker -c 2`, whose two
processes share the record's token bucket in Redis.

Figures: the achieved rate (requests the double accepted beyond the burst / the time from
the first to the last) as a share of the limit (goal 95-100 %), the busiest second seen
by the double, and the count of 429s (goal 0).

Usage: python scripts/bench_pacing.py [--n N] [--limit R] [--burst B]
DATABASE_URL and REDIS_URL as for scripts/bench.py (default: beacon_bench, Redis db 14).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import (  # noqa: E402
    SID,
    TOKEN,
    VAR,
    BenchError,
    CpuMeter,
    configure_environment,
    cpu_line,
    ensure_database,
    forget_queue,
    purge_queue,
    tables_like,
    truncate,
)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def serve_limited_double(limit: int, port_queue, report_queue) -> None:
    """The double, limited, in a process of its own; on SIGTERM it reports what it saw."""
    from tests.doubles.twilio import TwilioDouble

    double = TwilioDouble(account_sid=SID, auth_token=TOKEN).start()
    double.limit = limit
    port_queue.put(double.base_url)
    signal.sigwait([signal.SIGTERM])
    with double.lock:
        arrivals, accepted, throttled = list(double.arrivals), len(double.requests), double.throttled
    report_queue.put({"accepted": accepted, "throttled": throttled, "busiest": double.busiest_second()})
    report_queue.put(arrivals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()
    VAR.mkdir(exist_ok=True)
    configure_environment()
    os.environ.update(LOG_LEVEL="WARNING", BEACON_ALLOW_PRIVATE_TARGETS="true")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    truncate([*tables_like("notifications_"), *tables_like("preferences_"), "providers_providerconfig"], cascade=True)
    purge_queue()
    from providers.shared_state import state_reset

    state_reset()

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    port_queue, report_queue = multiprocessing.Queue(), multiprocessing.Queue()
    double = multiprocessing.Process(
        target=serve_limited_double, args=(args.limit + args.burst, port_queue, report_queue), daemon=True
    )
    double.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    url = port_queue.get(timeout=20)
    try:
        result = run(args, url, double.pid)
    finally:
        double.terminate()
        purge_queue()
        forget_queue()
    seen = report_queue.get(timeout=30)
    arrivals = report_queue.get(timeout=30)
    double.join(10)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    rate = (seen["accepted"] - args.burst) / span if span else 0.0
    share = rate / args.limit
    print(f"\nBeacon pacing under a provider's rate limit, {datetime.now():%Y-%m-%d %H:%M}")
    print(
        f"{args.n:,} SMS through one provider record limited to {args.limit}/s (burst {args.burst}), "
        f"2 worker processes: {rate:,.1f}/s achieved = {share:.1%} of the limit (goal 95-100 %); "
        f"busiest second at the double {seen['busiest']}; 429s {seen['throttled']} (goal 0); "
        f"all sent in {result['seconds']:.1f} s ({cpu_line(result['cpu'])})"
    )
    print(json.dumps({"n": args.n, "limit": args.limit, "rate": rate, "share": share, **seen}))
    if seen["accepted"] != args.n or seen["throttled"]:
        return 1
    return 0


def run(args, url: str, double_pid: int) -> dict:
    from accounts.services import api_token_issue
    from notifications.models import Delivery, DeliveryStatus
    from notifications.services import Item, notifications_accept_batch
    from providers.services import provider_config_create
    from tests.worker import Worker

    token, _ = api_token_issue(username="bench-pacing", create=True)
    account = token.account
    provider_config_create(
        account,
        name="limited twilio",
        channel="sms",
        kind="twilio",
        credentials={"account_sid": SID, "auth_token": TOKEN},
        settings={"from_number": "+15005550006", "api_base_url": url},
        rate_limit_per_second=args.limit,
        burst=args.burst,
    )
    log(f"pacing: accepting {args.n:,} SMS")
    for start in range(0, args.n, 1000):
        notifications_accept_batch(
            account=account,
            channels=["sms"],
            items=[Item({"phone": f"+1415{n:07d}"}, {}) for n in range(start, min(start + 1000, args.n))],
            message="Paced",
        )
    log("pacing: starting a worker with 2 processes")
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    worker = Worker(env, os.environ["BEACON_QUEUE"], VAR / "bench-worker-pacing.log", concurrency=2, loglevel="WARNING")
    started = time.monotonic()
    worker.start(wait_ready=False)
    meter = CpuMeter({"celery": worker.process.pid, "double": double_pid}).start()
    deadline = started + args.n / args.limit * 3 + 60
    try:
        while Delivery.objects.filter(status=DeliveryStatus.SENT).count() < args.n:
            if worker.exited() is not None or time.monotonic() > deadline:
                raise BenchError(f"not all sent; see {worker.log_path}")
            time.sleep(0.5)
        cores = meter.stop()
    finally:
        worker.stop()
    return {"seconds": time.monotonic() - started, "cpu": cores}


if __name__ == "__main__":
    sys.exit(main())
