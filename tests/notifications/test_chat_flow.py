"""Chat channels end to end in-process: send API -> accept -> dispatch (eager) -> the chat
adapters -> the local webhook double. Addresses come from the request or, left out, from
the recipient stored under the same external id."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Delivery, DeliveryAttempt, Notification, Recipient
from tests.doubles.chat import (
    DISCORD_PATH,
    SLACK_INVALID_TOKEN,
    SLACK_PATH,
    TEAMS_PATH,
    slack_rate_limited,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SEND_URL = "/api/v1/notifications/send/"
BATCH_URL = "/api/v1/notifications/send/batch/"
# The stored-address lookup reads only the external id and the channel's address field.
FILL_QUERY = 'SELECT "notifications_recipient"."external_id"'


def chat_request(channel: str, url: str | None, **recipient) -> dict:
    recipient = {"external_id": "team-1", **recipient}
    if url is not None:
        recipient[f"{channel}_webhook_url"] = url
    return {"channel": channel, "recipient": recipient, "subject": "Hi", "message": "Body"}


def send(api, body, capture, url=SEND_URL):
    with capture(execute=True):
        return api.post(url, body, format="json")


def test_a_slack_send_reaches_the_webhook_with_blocks(alice, alice_api, chat, django_capture_on_commit_callbacks):
    # when
    response = send(alice_api, chat_request("slack", chat.slack_url), django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert response.json()["deliveries"][0]["to"] == chat.slack_url
    assert chat.received() == [
        {
            "path": SLACK_PATH,
            "query": {},
            "content_type": "application/json",
            "json": {
                "text": "Hi\nBody",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Hi", "emoji": True}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "Body"}},
                ],
            },
        }
    ]
    delivery.refresh_from_db()
    assert (delivery.channel, delivery.to, delivery.status, delivery.provider) == (
        "slack",
        chat.slack_url,
        "sent",
        "slack",
    )
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.outcome, attempt.response_code) == ("success", 200)
    # the URL is kept on the recipient for later sends
    recipient = Recipient.objects.get(account=alice, external_id="team-1")
    assert (recipient.slack_webhook_url, recipient.email, recipient.phone) == (chat.slack_url, "", "")


@pytest.mark.parametrize("channel,path", [("teams", TEAMS_PATH), ("discord", DISCORD_PATH)])
def test_teams_and_discord_sends_reach_their_webhooks(
    alice, alice_api, chat, django_capture_on_commit_callbacks, channel, path
):
    url = getattr(chat, f"{channel}_url")
    response = send(alice_api, chat_request(channel, url), django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.json()
    (request,) = chat.received(path)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.provider) == ("sent", channel)
    if channel == "teams":
        card = request["json"]["attachments"][0]["content"]
        assert [block["text"] for block in card["body"]] == ["Hi", "Body"]
        assert delivery.provider_message_id == ""
    else:
        assert request["json"]["embeds"] == [{"title": "Hi", "description": "Body"}]
        assert delivery.provider_message_id.isdigit()


def test_a_url_stored_on_the_recipient_serves_when_the_request_leaves_it_out(
    alice, alice_api, chat, django_capture_on_commit_callbacks
):
    # given: the URL was given once, through the preferences API
    stored = alice_api.patch("/api/v1/preferences/team-1/", {"slack_webhook_url": chat.slack_url}, format="json")
    assert stored.status_code == 201, stored.json()
    # when
    response = send(alice_api, chat_request("slack", None), django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    assert Delivery.objects.get().to == chat.slack_url
    assert Delivery.objects.get().status == "sent"
    assert [r["path"] for r in chat.received()] == [SLACK_PATH]
    assert Recipient.objects.filter(account=alice).count() == 1


def test_a_url_given_in_the_request_wins_over_the_stored_one(
    alice, alice_api, chat, django_capture_on_commit_callbacks
):
    Recipient.objects.create(account=alice, external_id="team-1", slack_webhook_url=chat.url("/services/T/B/old"))
    response = send(alice_api, chat_request("slack", chat.slack_url), django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.json()
    assert [r["path"] for r in chat.received()] == [SLACK_PATH]
    assert Recipient.objects.get(account=alice).slack_webhook_url == chat.slack_url


def test_another_accounts_stored_url_does_not_serve(alice, alice_api, chat, django_capture_on_commit_callbacks):
    Recipient.objects.create(
        account=UserFactory(username="bob"), external_id="team-1", slack_webhook_url=chat.slack_url
    )
    response = send(alice_api, chat_request("slack", None), django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert response.json()["errors"] == {"recipient": {"slack_webhook_url": ["Required to send on the slack channel."]}}
    assert (Notification.objects.count(), Delivery.objects.count(), chat.received()) == (0, 0, [])


def test_a_batch_takes_stored_urls_in_one_lookup(alice, alice_api, chat, django_capture_on_commit_callbacks):
    # given
    for index in range(3):
        Recipient.objects.create(
            account=alice, external_id=f"team-{index}", slack_webhook_url=chat.url(f"/services/T/B/{index}")
        )
    body = {
        "channel": "slack",
        "recipients": [{"external_id": f"team-{index}"} for index in range(3)]
        + [{"external_id": "team-9", "slack_webhook_url": chat.url("/services/T/B/9")}],
        "subject": "Hi",
        "message": "Body",
    }
    # when
    with CaptureQueriesContext(connection) as queries:
        response = send(alice_api, body, django_capture_on_commit_callbacks, BATCH_URL)
    # then
    assert response.status_code == 202, response.json()
    assert sorted(r["path"] for r in chat.received()) == [f"/services/T/B/{index}" for index in (0, 1, 2, 9)]
    # one query reads the stored URLs of the whole batch (validation fills them; accept finds none missing)
    assert len([q for q in queries.captured_queries if q["sql"].startswith(FILL_QUERY)]) == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_a_429_becomes_a_retry_after_retry_after(alice, alice_api, chat, django_capture_on_commit_callbacks):
    # given
    chat.answer_next(SLACK_PATH, slack_rate_limited(120))
    before = timezone.now()
    # when
    send(alice_api, chat_request("slack", chat.slack_url), django_capture_on_commit_callbacks)
    # then: queued again, due no sooner than Slack asked, one request made
    delivery = Delivery.objects.get()
    assert delivery.status == "queued"
    assert delivery.next_attempt_at >= before + timedelta(seconds=120)
    assert delivery.error_message == "Slack answered HTTP 429: rate_limited"
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.outcome, attempt.response_code, attempt.retry_after_seconds) == ("retryable", 429, 120.0)
    assert len(chat.received()) == 1


def test_an_invalid_token_fails_at_once(alice, alice_api, chat, django_capture_on_commit_callbacks):
    chat.answer_next(SLACK_PATH, SLACK_INVALID_TOKEN)
    send(alice_api, chat_request("slack", chat.slack_url), django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.error_code) == ("failed", "invalid_token")
    assert list(delivery.attempts.values_list("outcome", "response_code")) == [("permanent", 403)]
    assert len(chat.received()) == 1


@pytest.mark.parametrize("channel", ["slack", "teams", "discord"])
def test_a_private_url_is_refused_at_accept_unless_allowed(
    alice_api, chat, settings, django_capture_on_commit_callbacks, channel
):
    # given
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    # when
    response = send(
        alice_api, chat_request(channel, getattr(chat, f"{channel}_url")), django_capture_on_commit_callbacks
    )
    # then
    assert response.status_code == 400
    field = f"{channel}_webhook_url"
    assert response.json() == {
        "message": "Invalid input: recipient: 127.0.0.1 is not a public address.",
        "errors": {"recipient": {field: ["127.0.0.1 is not a public address."]}},
    }
    assert (Recipient.objects.count(), Notification.objects.count(), Delivery.objects.count()) == (0, 0, 0)
    assert chat.received() == []


def test_a_non_http_url_is_refused_even_when_private_targets_are_allowed(alice_api, chat):
    response = alice_api.post(SEND_URL, chat_request("slack", "ftp://hooks.example.com/x"), format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]["recipient"]) == ["slack_webhook_url"]
    assert Delivery.objects.count() == 0


def test_a_stored_url_that_became_unsafe_fails_at_send_without_a_request(
    alice, alice_api, chat, settings, django_capture_on_commit_callbacks
):
    # given: stored while private targets were allowed, sent after they no longer are
    Recipient.objects.create(account=alice, external_id="team-1", slack_webhook_url=chat.slack_url)
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    # when
    response = send(alice_api, chat_request("slack", None), django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.error_code) == ("failed", "unsafe_target")
    assert delivery.error_message == "Slack webhook URL refused: 127.0.0.1 is not a public address."
    assert chat.received() == []
