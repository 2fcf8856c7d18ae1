#!/usr/bin/env python
"""The due scan and the decision, measured on PostgreSQL.

1. The due scan: 1,000,000 schedule rows, of which 10,000 are due (the rest already sent,
   cancelled, or due later). It shows the claim query's EXPLAIN (it must stay on the
   partial index `schedule_due_idx`, never a sequential scan), then claims the 10,000 due
   rows in batches as the periodic task does and gives the rate; then puts them back and
   processes them whole (claim, render from the booking, decide, write) for the rate of
   the full pass.
2. The decision over 10,000 planned deliveries (reminders under a daily cap, marketing
   under consent, quiet hours, suppressions) and over 10: the number of statements must
   be the same.

Usage: python scripts/bench_schedules.py [--rows N] [--due N]
(DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/beacon_bench; its schedule
tables are emptied first.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import configure_environment, ensure_database  # noqa: E402


def log(message: str) -> None:
    print(message, flush=True)


def setup() -> None:
    configure_environment()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("load_default_templates", verbosity=0)


def fill(rows: int, due: int):
    """One account, 1,000 recipients, and `rows` schedules of which `due` are due now."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from notifications.models import NotificationSchedule, Recipient
    from templates.selectors import template_resolve

    table = NotificationSchedule._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table}")
    user, _ = get_user_model().objects.get_or_create(username="bench-schedules")
    if Recipient.objects.filter(account=user).count() < 1000:
        Recipient.objects.bulk_create(
            [Recipient(account=user, email=f"p{n}@example.com", name=f"Person {n}") for n in range(1000)]
        )
    people = list(Recipient.objects.filter(account=user).order_by("pk").values_list("pk", flat=True)[:1000])
    template = template_resolve(account=user, reference="booking_reminder")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # The rest: half long sent, the other half scheduled for the coming weeks, a few cancelled.
        cursor.execute(
            f"""
            INSERT INTO {table} (id, account_id, schedule_type, channel, recipient_id, template_id, context,
                                 priority, category, scheduled_for, status, created_at, updated_at, error_message)
            SELECT gen_random_uuid(), %s, 'reminder', 'email', (%s::bigint[])[n %% 1000 + 1], %s,
                   jsonb_build_object('event_name', 'Event ' || n, 'start_time', 'tomorrow at 10:00'), 'normal', 'transactional',
                   CASE WHEN n < %s THEN now() - interval '1 minute' * (1 + n %% 600)
                        WHEN n %% 2 = 0 THEN now() - interval '1 minute' * (10 + n %% 100000)
                        ELSE now() + interval '1 minute' * (10 + n %% 100000) END,
                   CASE WHEN n < %s THEN 'scheduled'
                        WHEN n %% 2 = 0 THEN (CASE WHEN n %% 10 = 0 THEN 'cancelled' ELSE 'sent' END)
                        ELSE 'scheduled' END,
                   now(), now(), ''
            FROM generate_series(0, %s - 1) AS n
            """,
            [user.pk, people, template.pk, due, due, rows],
        )
        cursor.execute(f"VACUUM ANALYZE {table}")
    log(f"filled {rows:,} schedule rows ({due:,} due) in {time.perf_counter() - started:.1f} s")
    return user


def explain_claim() -> str:
    from django.db import connection
    from django.utils import timezone

    from notifications.models import NotificationSchedule

    table = NotificationSchedule._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)
            SELECT id FROM {table}
            WHERE status = 'scheduled' AND delivery_id IS NULL AND scheduled_for <= %s
            ORDER BY scheduled_for LIMIT 500 FOR UPDATE SKIP LOCKED
            """,
            [timezone.now()],
        )
        return "\n".join(row[0] for row in cursor.fetchall())


def measure_claim(batch: int) -> tuple[int, float]:
    from django.utils import timezone

    from notifications.services.schedules import schedules_claim

    now = timezone.now()
    claimed = 0
    started = time.perf_counter()
    while True:
        ids = schedules_claim(now=now, limit=batch)
        if not ids:
            break
        claimed += len(ids)
    return claimed, time.perf_counter() - started


def put_back() -> None:
    from notifications.models import NotificationSchedule

    NotificationSchedule.objects.filter(status="processing").update(status="scheduled", claimed_at=None)


def measure_process() -> tuple[dict, float]:
    from notifications.services.schedules import schedules_process

    started = time.perf_counter()
    counts = schedules_process()
    return counts, time.perf_counter() - started


def measure_decide(user) -> list[tuple[int, int, float]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from notifications.models import Recipient
    from preferences.models import ConsentRecord, DailyCount, RecipientPreference, Suppression, address_hash
    from preferences.services import account_preference, deliveries_decide
    from preferences.services.decide import Planned

    prefs = account_preference(account=user)
    prefs.dnd_enabled, prefs.timezone = True, "Europe/Madrid"
    prefs.save()
    people = list(Recipient.objects.filter(account=user).order_by("pk"))
    RecipientPreference.objects.filter(recipient__in=people).delete()
    DailyCount.objects.filter(recipient__in=people).delete()
    RecipientPreference.objects.bulk_create(
        [RecipientPreference(account=user, recipient=p, quiet_hours_enabled=True, opt_outs=[]) for p in people[::3]]
    )
    ConsentRecord.objects.filter(account=user).delete()
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(account=user, recipient=p, granted=True, method="api", recorded_at=timezone.now())
            for p in people[::2]
        ]
    )
    Suppression.objects.filter(account=user).delete()
    Suppression.objects.bulk_create(
        [
            Suppression(
                account=user,
                channel="email",
                address=p.email,
                address_hash=address_hash("email", p.email),
                reason="bounced",
            )
            for p in people[::50]
        ]
    )
    kinds = [("booking_reminder", "transactional"), ("custom", "marketing"), ("booking_confirmation", "transactional")]
    now = timezone.now()
    results = []
    for n in (10, 10_000):
        planned = [
            Planned(
                recipient_id=people[i % len(people)].pk,
                channel="email",
                category=kinds[i % 3][1],
                priority="normal",
                send_at=now + timedelta(minutes=i % 1440),
                kind=kinds[i % 3][0],
                address=people[i % len(people)].email,
                timezone=["America/New_York", "Asia/Tokyo", ""][i % 3],
            )
            for i in range(n)
        ]
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            deliveries_decide(account=user, planned=planned)
            elapsed = time.perf_counter() - started
        results.append((n, len(queries.captured_queries), elapsed))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Schedule rows in all (default 1,000,000).")
    parser.add_argument("--due", type=int, default=10_000, help="Of which due now (default 10,000).")
    parser.add_argument("--batch", type=int, default=500, help="Rows per claim (default 500, as the task).")
    args = parser.parse_args()
    setup()
    user = fill(args.rows, args.due)
    plan = explain_claim()
    log("\nEXPLAIN of the due scan's claim:\n" + plan + "\n")
    on_index = "schedule_due_idx" in plan and "Seq Scan" not in plan
    claimed, seconds = measure_claim(args.batch)
    claim_rate = claimed / seconds if seconds else 0
    put_back()
    counts, process_seconds = measure_process()
    decide = measure_decide(user)
    log("| measure | figure | goal |")
    log("| --- | --- | --- |")
    log(f"| due scan on the partial index | {'yes' if on_index else 'NO'} | yes |")
    log(f"| claim {claimed:,} due of {args.rows:,} rows | {claim_rate:,.0f} rows/s ({seconds:.2f} s) | >= 10,000/s |")
    log(
        f"| full pass: claim, render, decide, write {counts['claimed']:,} | "
        f"{counts['claimed'] / process_seconds:,.0f} rows/s ({process_seconds:.2f} s; sent {counts['sent']:,}, "
        f"skipped {counts['skipped']:,}, failed {counts['failed']:,}) | - |"
    )
    for n, statements, elapsed in decide:
        log(f"| decide over {n:,} deliveries | {statements} statements, {elapsed * 1000:,.0f} ms | constant |")
    constant = len({statements for _, statements, _ in decide}) == 1
    ok = on_index and claim_rate >= 10_000 and constant and claimed == args.due
    log("\nall goals met" if ok else "\nsome goal missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
