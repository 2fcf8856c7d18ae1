"""The decide seam: what accept does with each decision. DEFER is stored as scheduled at
`until` and the sweep sends it then; SKIP is stored as suppressed with its reason and is
never sent; SEND goes out at once."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from notifications import tasks
from notifications.models import Delivery, DeliveryEvent, Recipient
from notifications.services import accept, deliveries_sweep
from notifications.services.decide import SEND_NOW, Decision, Planned, Verdict
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, sms_request

pytestmark = pytest.mark.django_db

BATCH_URL = "/api/v1/notifications/send/batch/"


@pytest.fixture(autouse=True)
def _template(alice):
    make_template(alice)


class Decider:
    """Stands in for deliveries_decide: answers the given decisions in order and keeps
    what it was asked."""

    def __init__(self, *decisions: Decision):
        self.decisions = list(decisions)
        self.calls: list[tuple[object, list[Planned]]] = []

    def __call__(self, *, account, planned):
        self.calls.append((account, list(planned)))
        assert len(planned) == len(self.decisions)
        return list(self.decisions)


@pytest.fixture
def decide(monkeypatch):
    def install(*decisions: Decision) -> Decider:
        decider = Decider(*decisions)
        monkeypatch.setattr(accept, "deliveries_decide", decider)
        return decider

    return install


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def batch(n: int, **overrides) -> dict:
    body = {
        "channel": "sms",
        "template": "reminder",
        "recipients": [{"phone": phone(i), "context": {"event_name": f"Event {i}"}} for i in range(n)],
    }
    body.update(overrides)
    return body


def events_of(delivery) -> list[tuple[str, str, str, str]]:
    return list(delivery.events.values_list("from_status", "status", "source", "detail"))


def test_send_defer_and_skip_in_one_batch(alice, alice_api, twilio, decide, django_capture_on_commit_callbacks):
    # given
    until = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    decider = decide(SEND_NOW, Decision(Verdict.DEFER, until=until), Decision(Verdict.SKIP, reason="quiet hours"))
    # when
    before = timezone.now()
    with (
        mock.patch.object(
            tasks.deliveries_dispatch, "apply_async", wraps=tasks.deliveries_dispatch.apply_async
        ) as publish,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        response = alice_api.post(BATCH_URL, batch(3), format="json")
    # then: the decider was asked once, about the three deliveries, in request order
    assert response.status_code == 202, response.json()
    recipients = [Recipient.objects.get(account=alice, phone=phone(i)).pk for i in range(3)]
    ((account, planned),) = decider.calls
    assert account == alice
    assert [(p.recipient_id, p.channel, p.category, p.priority) for p in planned] == [
        (pk, "sms", "transactional", "normal") for pk in recipients
    ]
    assert len({p.send_at for p in planned}) == 1
    assert before <= planned[0].send_at <= timezone.now()
    # the answer says what each became
    answer = response.json()
    assert (answer["status"], answer["count"], answer["scheduled_for"]) == ("accepted", 3, None)
    assert [n["deliveries"][0]["status"] for n in answer["notifications"]] == ["queued", "scheduled", "suppressed"]
    sent, deferred, skipped = (Delivery.objects.get(pk=n["deliveries"][0]["id"]) for n in answer["notifications"])
    # SEND: enqueued after commit, alone, and sent
    assert len(callbacks) == 1
    publish.assert_called_once_with(args=["sms", [[str(sent.pk), 0]]], countdown=None)
    assert (sent.status, sent.attempt_count) == ("sent", 1)
    # DEFER: scheduled at `until`, waiting for the sweep
    assert (deferred.status, deferred.next_attempt_at, deferred.enqueued_at) == ("scheduled", until, None)
    assert (deferred.attempt_count, deferred.error_code, deferred.error_message) == (0, "", "")
    assert deferred.notification.scheduled_for is None
    assert events_of(deferred) == [("", "scheduled", "api", f"deferred until {until.isoformat()}")]
    # SKIP: suppressed with the reason on the delivery and its event
    assert (skipped.status, skipped.error_code, skipped.error_message) == ("suppressed", "skipped", "quiet hours")
    assert (skipped.next_attempt_at, skipped.enqueued_at, skipped.attempt_count) == (None, None, 0)
    assert events_of(skipped) == [("", "suppressed", "api", "quiet hours")]
    assert [r["To"] for r in twilio.requests] == [phone(0)]

    # when: the sweep runs before `until`, then after it
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliveries_sweep(now=until - timedelta(seconds=1)) == {"due": 0, "requeued": 0, "abandoned": 0}
    assert callbacks == []
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=until + timedelta(seconds=1)) == {"due": 1, "requeued": 0, "abandoned": 0}
    # then: the deferred one is sent, the skipped one never
    assert [r["To"] for r in twilio.requests] == [phone(0), phone(1)]
    deferred.refresh_from_db()
    skipped.refresh_from_db()
    assert (deferred.status, deferred.attempt_count) == ("sent", 1)
    assert [(e[0], e[1], e[2]) for e in events_of(deferred)] == [
        ("", "scheduled", "api"),
        ("scheduled", "queued", "schedule"),
        ("queued", "sending", "dispatch"),
        ("sending", "sent", "dispatch"),
    ]
    assert (skipped.status, skipped.attempt_count, skipped.attempts.count()) == ("suppressed", 0, 0)
    assert events_of(skipped) == [("", "suppressed", "api", "quiet hours")]
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=until + timedelta(days=1)) == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio.sent_count() == 2


def test_a_deferral_never_brings_a_scheduled_send_forward(
    alice_api, twilio, decide, django_capture_on_commit_callbacks
):
    # given: the request asks for tomorrow; the decider would allow it in an hour
    scheduled_for = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    decider = decide(Decision(Verdict.DEFER, until=scheduled_for - timedelta(hours=23)))
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_api.post(BATCH_URL, batch(1, scheduled_for=scheduled_for.isoformat()), format="json")
    # then
    assert response.status_code == 202
    assert decider.calls[0][1][0].send_at == scheduled_for
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.next_attempt_at) == ("scheduled", scheduled_for)
    assert callbacks == []
    assert twilio.sent_count() == 0


def test_a_deferral_past_the_scheduled_time_wins(alice_api, twilio, decide, django_capture_on_commit_callbacks):
    scheduled_for = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    until = scheduled_for + timedelta(hours=8)
    decide(Decision(Verdict.DEFER, until=until))
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(BATCH_URL, batch(1, scheduled_for=scheduled_for.isoformat()), format="json")
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.next_attempt_at) == ("scheduled", until)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=scheduled_for + timedelta(seconds=1))["due"] == 0
    assert twilio.sent_count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=until + timedelta(seconds=1))["due"] == 1
    assert twilio.sent_count() == 1
    assert Delivery.objects.get().status == "sent"


def test_decisions_are_per_delivery_across_channels(
    alice_api, twilio, smtp, decide, django_capture_on_commit_callbacks
):
    # given: two recipients on two channels; planned in notification order, channel order within
    decider = decide(
        SEND_NOW,
        Decision(Verdict.SKIP, reason="no marketing email"),
        Decision(Verdict.SKIP, reason="opted out of SMS"),
        SEND_NOW,
    )
    body = {
        "channels": ["sms", "email"],
        "template": "reminder",
        "recipients": [
            {"phone": phone(0), "email": "ana@example.com", "context": {"event_name": "Haircut"}},
            {"phone": phone(1), "email": "ben@example.com", "context": {"event_name": "Haircut"}},
        ],
    }
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(BATCH_URL, body, format="json")
    # then
    assert response.status_code == 202
    assert [p.channel for p in decider.calls[0][1]] == ["sms", "email", "sms", "email"]
    assert [[(d["channel"], d["status"]) for d in n["deliveries"]] for n in response.json()["notifications"]] == [
        [("sms", "queued"), ("email", "suppressed")],
        [("sms", "suppressed"), ("email", "queued")],
    ]
    assert [r["To"] for r in twilio.requests] == [phone(0)]
    assert [m["message"]["To"] for m in smtp.messages] == ["ben@example.com"]
    assert sorted(Delivery.objects.filter(status="suppressed").values_list("to", "error_message")) == [
        ("+14155550001", "opted out of SMS"),
        ("ana@example.com", "no marketing email"),
    ]


def test_a_skip_on_the_single_send_is_never_sent(alice_api, twilio, decide, django_capture_on_commit_callbacks):
    # given
    decide(Decision(Verdict.SKIP, reason="daily cap reached"))
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_api.post(SEND_URL, sms_request(), format="json")
    # then
    assert response.status_code == 202
    assert response.json()["deliveries"][0]["status"] == "suppressed"
    assert callbacks == []
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.error_code, delivery.error_message) == (
        "suppressed",
        "skipped",
        "daily cap reached",
    )
    assert events_of(delivery) == [("", "suppressed", "api", "daily cap reached")]
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=timezone.now() + timedelta(days=1)) == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio.sent_count() == 0
    assert DeliveryEvent.objects.count() == 1


def test_the_default_decides_to_send_everything_now(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(BATCH_URL, batch(3), format="json")
    assert [n["deliveries"][0]["status"] for n in response.json()["notifications"]] == ["queued"] * 3
    assert twilio.sent_count() == 3
    assert Delivery.objects.filter(status="sent").count() == 3
