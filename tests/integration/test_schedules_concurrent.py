"""Two due scans at once over the same 1,000 due schedules, on PostgreSQL, with the
deliveries sent by a real worker through the Twilio double: every schedule is claimed by
one scan, and every number gets its message exactly once."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from notifications.models import Delivery, Notification, NotificationSchedule, Recipient
from notifications.services.schedules import schedules_process
from tests.factories import UserFactory, make_template
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

COUNT = 1000


def test_two_scans_send_each_of_1000_due_schedules_once(real_worker, twilio_server, settings):
    # given: 1,000 reminders that fell due a minute ago
    settings.BEACON_SCHEDULE_BATCH_SIZE = 10
    alice = UserFactory(username="alice")
    template = make_template(alice)
    people = Recipient.objects.bulk_create(
        [Recipient(account=alice, phone=f"+1415600{n:04d}", name=f"Person {n}") for n in range(COUNT)]
    )
    due = timezone.now() - timedelta(minutes=1)
    NotificationSchedule.objects.bulk_create(
        [
            NotificationSchedule(
                account=alice,
                schedule_type="reminder",
                channel="sms",
                recipient=person,
                template=template,
                context={"event_name": f"Event {n}"},
                scheduled_for=due,
            )
            for n, person in enumerate(people)
        ]
    )
    # when: two scans start together
    start = threading.Barrier(2)
    results: list[dict] = []
    errors: list[BaseException] = []

    def scan():
        try:
            start.wait()
            results.append(schedules_process())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # then: between them they claimed each row once, and both took part
    assert not errors, errors
    claimed = [result["claimed"] for result in results]
    assert sum(claimed) == COUNT and min(claimed) > 0, claimed
    assert sum(result["sent"] for result in results) == COUNT
    assert NotificationSchedule.objects.filter(status="sent").count() == COUNT
    assert Notification.objects.count() == COUNT
    assert NotificationSchedule.objects.values("notification").distinct().count() == COUNT
    # and the worker sent each one, once
    wait_for(lambda: Delivery.objects.filter(status="sent").count() == COUNT, timeout=120, message="all sent")
    assert twilio_server.sent_count() == COUNT
    sent_to = Counter(request["To"] for request in twilio_server.requests)
    assert len(sent_to) == COUNT and set(sent_to.values()) == {1}
