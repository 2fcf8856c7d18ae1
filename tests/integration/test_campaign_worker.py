"""A 5,000-recipient campaign on the real parts: PostgreSQL, Redis, `celery worker`
processes, the real twilio client and the Twilio double. It is paused mid-way, its worker
processes are SIGKILLed while it is paused, and it is resumed: every eligible recipient
gets exactly one message, the suppressed ones none."""

import os
import signal
from collections import Counter

import pytest

from campaigns.models import Audience, AudienceMember, Campaign
from campaigns.services import campaign_create, campaigns_watch
from notifications.models import Delivery, Recipient
from preferences.models import Suppression, address_hash
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MEMBERS = 5000
SUPPRESSED = 50
CAMPAIGNS = "/api/v1/campaigns/"


def phone(n: int) -> str:
    return f"+1415{n:07d}"


def test_a_campaign_paused_killed_and_resumed_reaches_everyone_eligible_once(workers, twilio_server):
    # given: 5,000 members, 50 of whom said STOP; the provider answering a little slowly
    alice = UserFactory(username="alice")
    audience = Audience.objects.create(account=alice, name="everyone")
    people = Recipient.objects.bulk_create(
        [Recipient(account=alice, external_id=f"c{n}", phone=phone(n)) for n in range(MEMBERS)], batch_size=1000
    )
    AudienceMember.objects.bulk_create(
        [AudienceMember(audience=audience, recipient=p) for p in people], batch_size=1000
    )
    Suppression.objects.bulk_create(
        [
            Suppression(account=alice, channel="sms", address_hash=address_hash("sms", phone(n)), reason="stop")
            for n in range(0, MEMBERS, MEMBERS // SUPPRESSED)
        ]
    )
    campaign = campaign_create(
        alice,
        name="Outage notice",
        audience=audience,
        channels=["sms"],
        message="We are back",
        category="transactional",
    )
    worker = workers(2, BEACON_CAMPAIGN_PAGE_SIZE="100")
    twilio_server.reset()
    twilio_server.delay = 0.002
    api = client_for(alice)
    # when: started, and paused once a thousand have gone
    assert api.post(f"{CAMPAIGNS}{campaign.pk}/start/").status_code == 200
    wait_for(lambda: twilio_server.sent_count() >= 1000, timeout=60, message="1,000 sent")
    assert api.post(f"{CAMPAIGNS}{campaign.pk}/pause/").status_code == 200
    # then: within seconds nothing more is sent (what was in flight finishes)
    wait_for(
        lambda: not Delivery.objects.filter(status="sending").exists(), timeout=30, message="in-flight sends settled"
    )
    paused_at = twilio_server.sent_count()
    assert paused_at < MEMBERS - SUPPRESSED
    # when: the worker's processes are killed while it is paused, then it is resumed
    for pid in worker.pool_pids():
        os.kill(pid, signal.SIGKILL)
    assert twilio_server.sent_count() == paused_at
    assert api.post(f"{CAMPAIGNS}{campaign.pk}/resume/").status_code == 200
    # then: the campaign completes; each eligible number got exactly one message

    def completed() -> bool:
        campaigns_watch()  # what beat runs every BEACON_CAMPAIGN_WATCH_SECONDS
        return Campaign.objects.get(pk=campaign.pk).status == "completed"

    try:
        wait_for(completed, timeout=120, message="the campaign completed")
    except AssertionError:
        statuses = Counter(Delivery.objects.values_list("status", flat=True))
        raise AssertionError(f"not completed: {dict(statuses)}, sent {twilio_server.sent_count()}") from None
    received = Counter(r["To"] for r in twilio_server.requests)
    suppressed = {phone(n) for n in range(0, MEMBERS, MEMBERS // SUPPRESSED)}
    assert set(received.values()) == {1}
    assert set(received) == {phone(n) for n in range(MEMBERS)} - suppressed
    counts = api.get(f"{CAMPAIGNS}{campaign.pk}/").json()["counts"]
    assert counts["by_status"]["sent"] == MEMBERS - SUPPRESSED
    assert counts["skipped"] == SUPPRESSED
    assert counts["recipients_reached"] == MEMBERS
