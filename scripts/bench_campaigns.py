#!/usr/bin/env python
"""Campaign fan-out and delivery, measured on PostgreSQL and Redis.

1. fan-out  --n (1,000,000) recipients, each a member of one audience (seeded with COPY),
            and a campaign to them (SMS, a literal message, transactional). Its fan-out
            runs in this process as the task does, page after page, until every member
            has a notification and a delivery and every delivery a dispatch task in Redis.
            Figures: members/s over the whole fan-out, and this process's peak RSS.
2. delivery the queued deliveries drained by a real `celery worker -c 2` to the provider
            that makes no network call (`console`, logging off): delivered/s from worker
            spawn.

Beside them, django-post_office's figures from the peer run of the same sitting (`make
bench` runs scripts/bench.py first, which runs it): its `send_many` of 100,000 (the
nearest to a fan-out) and its `send_queued_mail` of 100,000.

Usage: python scripts/bench_campaigns.py [--n N] [--no-drain]
DATABASE_URL and REDIS_URL as for scripts/bench.py (default: beacon_bench, Redis db 14).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import (  # noqa: E402
    PEER_BASE,
    PEER_DIR,
    VAR,
    BenchError,
    configure_environment,
    drain,
    ensure_database,
    forget_queue,
    purge_queue,
    queue_size,
    read_peer,
    tables_like,
    truncate,
)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def seed(n: int):
    """An account, n recipients and an audience of them all, with COPY."""
    from django.db import connection

    from accounts.services import api_token_issue
    from campaigns.models import Audience

    token, _ = api_token_issue(username="bench-campaigns", create=True)
    account = token.account
    audience = Audience.objects.create(account=account, name="everyone", member_count=n)
    now = datetime.now().isoformat()
    started = time.monotonic()
    with connection.cursor() as cursor:
        for start in range(0, n, 100_000):
            rows = io.StringIO()
            for i in range(start, min(start + 100_000, n)):
                rows.write(f"{account.pk}\tc{i}\t+1415{i:07d}\t\t\t\t\t\t\t\t\t[]\t{{}}\t{now}\t{now}\n")
            rows.seek(0)
            cursor.copy_expert(
                "COPY notifications_recipient (account_id, external_id, phone, email, name, timezone, locale, "
                "slack_webhook_url, teams_webhook_url, discord_webhook_url, webhook_url, tags, attributes, "
                "created_at, updated_at) FROM STDIN",
                rows,
            )
        cursor.execute(
            "INSERT INTO campaigns_audiencemember (audience_id, recipient_id, attributes, created_at) "
            "SELECT %s, id, '{}', now() FROM notifications_recipient WHERE account_id = %s ORDER BY id",
            [audience.pk, account.pk],
        )
        cursor.execute("ANALYZE notifications_recipient; ANALYZE campaigns_audiencemember")
    log(f"seeded {n:,} recipients and members in {time.monotonic() - started:.1f} s")
    return account, audience


def fan_out(account, audience, n: int) -> dict:
    from campaigns.models import Campaign
    from campaigns.services import campaign_create
    from campaigns.services import campaign_fan_out as fan_out_pages
    from notifications.models import Delivery

    campaign = campaign_create(
        account, name="bench", audience=audience, channels=["sms"], message="Spring offer", category="transactional"
    )
    Campaign.objects.filter(pk=campaign.pk).update(status="running")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = fan_out_pages(campaign.pk, seconds=10**9)
    seconds = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    written = Delivery.objects.filter(status="queued").count()
    log(
        f"fan-out: {result.recipients:,} in {seconds:.1f} s = {result.recipients / seconds:,.0f} members/s; "
        f"{written:,} deliveries queued, {queue_size():,} task messages; peak RSS {peak_mb:.0f} MB "
        f"(before {rss_before / 1024:.0f} MB)"
    )
    if written != n or not result.done:
        raise BenchError(f"fan-out wrote {written:,} of {n:,} deliveries")
    return {"n": n, "seconds": seconds, "rate": n / seconds, "peak_rss_mb": peak_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--no-drain", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    VAR.mkdir(exist_ok=True)
    configure_environment()
    os.environ.update(LOG_LEVEL="WARNING", BEACON_SMS_PROVIDER="console")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    truncate([*tables_like("campaigns_"), *tables_like("notifications_"), *tables_like("preferences_")], cascade=True)
    purge_queue()
    results = {}
    try:
        account, audience = seed(args.n)
        results["fan_out"] = fan_out(account, audience, args.n)
        if not args.no_drain:
            log(f"delivery: draining {args.n:,} with {args.workers} worker processes to the no-network provider")
            results["drain"] = drain(args.n, "console", SimpleNamespace(workers=args.workers, timeout=args.timeout), {})
    finally:
        purge_queue()
        forget_queue()
    peer = {}
    results_dir = PEER_BASE / "results" / "beacon-bench"
    if results_dir.exists():
        try:
            peer = read_peer(PEER_DIR, results_dir, dict(os.environ))
        except BenchError as exc:
            log(f"no peer figures: {exc}")
    print(f"\nBeacon campaigns, {datetime.now():%Y-%m-%d %H:%M}")
    fan = results["fan_out"]
    send_many = (peer.get("po_send_many_100000") or {}).get("rate")
    line = f"fan-out of {fan['n']:,}: {fan['seconds']:.1f} s ({fan['rate']:,.0f} members/s), peak RSS {fan['peak_rss_mb']:.0f} MB"
    if send_many:
        line += f"; post_office send_many of 100,000: {send_many:,.0f}/s, ratio {fan['rate'] / send_many:.2f}x"
    print(line + "  (goal: 1,000,000 in <= 60 s, RSS <= 250 MB)")
    if drained := results.get("drain"):
        deliver = (peer.get("po_deliver_p1_100000") or {}).get("rate")
        line = f"delivery to the no-network provider: {drained['rate']:,.0f}/s from worker spawn"
        if deliver:
            line += (
                f"; post_office send_queued_mail of 100,000: {deliver:,.0f}/s, ratio {drained['rate'] / deliver:.2f}x"
            )
        print(line + "  (goal: >= 5,000/s)")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "cpu"} for k, v in results.items()}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
