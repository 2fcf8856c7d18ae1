"""The chat adapters (Slack, Teams, Discord) against the local webhook double."""

import logging

import pytest

from providers.base import OutboundMessage, ProviderError, ProviderUnavailable, RecipientRejected
from providers.chat import DiscordWebhookProvider, SlackWebhookProvider, TeamsWebhookProvider
from providers.registry import PROVIDER_CLASSES, provider_for_channel
from tests.doubles.chat import (
    DISCORD_PATH,
    DISCORD_UNKNOWN_WEBHOOK,
    SLACK_CHANNEL_IS_ARCHIVED,
    SLACK_CHANNEL_NOT_FOUND,
    SLACK_INVALID_TOKEN,
    SLACK_NO_SERVICE,
    SLACK_PATH,
    TEAMS_PATH,
    discord_rate_limited,
    slack_rate_limited,
    teams_rate_limited,
)
from tests.doubles.smtp import free_port


def chat_message(channel: str, to: str, **overrides) -> OutboundMessage:
    fields = {"channel": channel, "to": to, "subject": "Booking confirmed", "body": "Haircut at 10:00 with Ana"}
    fields.update(overrides)
    return OutboundMessage(**fields)


def test_the_registry_knows_the_three_kinds_and_each_needs_no_configuration(settings):
    assert PROVIDER_CLASSES["slack"] is SlackWebhookProvider
    assert PROVIDER_CLASSES["teams"] is TeamsWebhookProvider
    assert PROVIDER_CLASSES["discord"] is DiscordWebhookProvider
    for channel in ("slack", "teams", "discord"):
        provider = provider_for_channel(channel)
        assert provider.kind == channel
        assert provider.timeout == settings.PROVIDER_TIMEOUT_SECONDS
        assert provider.check_configuration() == []


def test_each_adapter_keeps_one_session(chat):
    provider = provider_for_channel("slack")
    session = provider._session
    provider.send(chat_message("slack", chat.slack_url))
    provider.send(chat_message("slack", chat.slack_url))
    assert provider._session is session
    assert provider_for_channel("slack") is provider
    assert session.trust_env is False


# --- Slack ---------------------------------------------------------------------------------


def test_slack_posts_blocks_and_text(chat):
    # when
    result = provider_for_channel("slack").send(chat_message("slack", chat.slack_url, body="Ana <!channel> & co"))
    # then
    assert chat.received() == [
        {
            "path": SLACK_PATH,
            "query": {},
            "content_type": "application/json",
            "json": {
                "text": "Booking confirmed\nAna &lt;!channel&gt; &amp; co",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Booking confirmed", "emoji": True}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "Ana &lt;!channel&gt; &amp; co"}},
                ],
            },
        }
    ]
    assert (result.provider_message_id, result.status, result.response_code) == ("", "sent", 200)


def test_slack_without_a_subject_has_no_header(chat):
    provider_for_channel("slack").send(chat_message("slack", chat.slack_url, subject=""))
    assert chat.received()[0]["json"] == {
        "text": "Haircut at 10:00 with Ana",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Haircut at 10:00 with Ana"}}],
    }


def test_slack_header_is_cut_to_its_limit(chat):
    provider_for_channel("slack").send(chat_message("slack", chat.slack_url, subject="x" * 200))
    header = chat.received()[0]["json"]["blocks"][0]["text"]["text"]
    assert header == "x" * 149 + "…"


@pytest.mark.parametrize(
    "answer",
    [SLACK_INVALID_TOKEN, SLACK_CHANNEL_NOT_FOUND, SLACK_CHANNEL_IS_ARCHIVED, SLACK_NO_SERVICE],
    ids=lambda answer: answer[2],
)
def test_slack_refusals_are_permanent_recipient_problems(chat, answer):
    chat.answer_next(SLACK_PATH, answer)
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("slack").send(chat_message("slack", chat.slack_url))
    status, _, code = answer
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert caught.value.message == f"Slack answered HTTP {status}: {code}"


def test_slack_429_is_retryable_after_retry_after(chat):
    chat.answer_next(SLACK_PATH, slack_rate_limited(30))
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("slack").send(chat_message("slack", chat.slack_url))
    assert caught.value.retryable is True
    assert (caught.value.status_code, caught.value.retry_after) == (429, 30.0)


def test_slack_5xx_is_retryable(chat):
    chat.answer_next(SLACK_PATH, (503, {}, "service_unavailable"))
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("slack").send(chat_message("slack", chat.slack_url))
    assert (caught.value.status_code, caught.value.retry_after, caught.value.code) == (503, None, "service_unavailable")


def test_a_redirect_is_not_followed(chat):
    chat.answer_next(SLACK_PATH, (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, ""))
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("slack").send(chat_message("slack", chat.slack_url))
    assert caught.value.status_code == 302
    assert len(chat.received()) == 1


# --- Teams ---------------------------------------------------------------------------------


def test_teams_posts_an_adaptive_card(chat):
    result = provider_for_channel("teams").send(chat_message("teams", chat.teams_url))
    assert chat.received(TEAMS_PATH)[0]["json"] == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "Booking confirmed",
                            "weight": "Bolder",
                            "size": "Large",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": "Haircut at 10:00 with Ana", "wrap": True},
                    ],
                },
            }
        ],
    }
    assert (result.provider_message_id, result.status, result.response_code) == ("", "sent", 200)


def test_teams_without_a_subject_has_only_the_body(chat):
    provider_for_channel("teams").send(chat_message("teams", chat.teams_url, subject=""))
    card = chat.received()[0]["json"]["attachments"][0]["content"]
    assert card["body"] == [{"type": "TextBlock", "text": "Haircut at 10:00 with Ana", "wrap": True}]


def test_teams_accepts_a_202_from_workflows(chat):
    chat.answer_next(TEAMS_PATH, (202, {}, None))
    assert provider_for_channel("teams").send(chat_message("teams", chat.teams_url)).response_code == 202


@pytest.mark.parametrize(
    "answer",
    [teams_rate_limited(12), (200, {"Retry-After": "12"}, "Microsoft Teams endpoint returned HTTP error 429")],
    ids=["429", "200 saying 429"],
)
def test_teams_throttling_is_retryable_after_retry_after(chat, answer):
    chat.answer_next(TEAMS_PATH, answer)
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("teams").send(chat_message("teams", chat.teams_url))
    assert (caught.value.status_code, caught.value.retry_after) == (429, 12.0)


@pytest.mark.parametrize("status,retryable", [(400, False), (404, False), (500, True), (502, True)])
def test_teams_4xx_is_permanent_and_5xx_retryable(chat, status, retryable):
    chat.answer_next(TEAMS_PATH, (status, {}, "Bad payload received by generic incoming webhook."))
    with pytest.raises(ProviderError) as caught:
        provider_for_channel("teams").send(chat_message("teams", chat.teams_url))
    assert (caught.value.status_code, caught.value.retryable) == (status, retryable)
    assert isinstance(caught.value, ProviderUnavailable if retryable else RecipientRejected)


# --- Discord -------------------------------------------------------------------------------


def test_discord_posts_an_embed_and_keeps_the_message_id(chat):
    result = provider_for_channel("discord").send(chat_message("discord", chat.discord_url))
    (request,) = chat.received(DISCORD_PATH)
    assert request["query"] == {"wait": "true"}
    assert request["json"] == {
        "embeds": [{"title": "Booking confirmed", "description": "Haircut at 10:00 with Ana"}],
        "allowed_mentions": {"parse": []},
    }
    assert result.provider_message_id.isdigit()
    assert len(result.provider_message_id) == 19
    assert (result.status, result.response_code) == ("sent", 200)


def test_discord_keeps_the_urls_own_query(chat):
    provider_for_channel("discord").send(chat_message("discord", chat.discord_url + "?thread_id=42&wait=false"))
    assert chat.received()[0]["query"] == {"thread_id": "42", "wait": "true"}


def test_discord_without_a_subject_has_no_title(chat):
    provider_for_channel("discord").send(chat_message("discord", chat.discord_url, subject=""))
    assert chat.received()[0]["json"]["embeds"] == [{"description": "Haircut at 10:00 with Ana"}]


@pytest.mark.parametrize(
    "answer,expected",
    [
        (discord_rate_limited(2.5), 2.5),
        (discord_rate_limited(2.5, header="3"), 3.0),
        (discord_rate_limited(9.75, header="3"), 9.75),
    ],
    ids=["body only", "header longer", "body longer"],
)
def test_discord_429_is_retryable_after_the_longer_wait(chat, answer, expected):
    chat.answer_next(DISCORD_PATH, answer)
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("discord").send(chat_message("discord", chat.discord_url))
    assert (caught.value.status_code, caught.value.retry_after) == (429, expected)


def test_discord_unknown_webhook_is_permanent(chat):
    chat.answer_next(DISCORD_PATH, DISCORD_UNKNOWN_WEBHOOK)
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("discord").send(chat_message("discord", chat.discord_url))
    assert (caught.value.status_code, caught.value.code) == (404, "10015")
    assert caught.value.message == "Discord answered HTTP 404: Unknown Webhook (10015)"


# --- The URL guard at send time ------------------------------------------------------------


@pytest.mark.parametrize("channel", ["slack", "teams", "discord"])
def test_a_private_url_is_refused_without_a_request_unless_allowed(chat, settings, channel):
    url = getattr(chat, f"{channel}_url")
    # given
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    # when
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel(channel).send(chat_message(channel, url))
    # then
    assert caught.value.retryable is False
    assert caught.value.code == "unsafe_target"
    assert caught.value.message.endswith("webhook URL refused: 127.0.0.1 is not a public address.")
    assert chat.received() == []
    # and with the switch on, the same URL is sent to
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    provider_for_channel(channel).send(chat_message(channel, url))
    assert len(chat.received()) == 1


def test_a_name_resolving_to_the_double_is_refused_when_connecting(chat, settings, monkeypatch):
    """DNS rebinding: the name looked public when checked but the connection reaches loopback."""
    import socket

    from providers import urlguard

    # given: the URL check sees a public address, the connection reaches 127.0.0.1
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    monkeypatch.setattr(urlguard, "_resolve", lambda host, port: [urlguard.ipaddress.ip_address("93.184.215.14")])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == "hooks.rebind.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = chat.slack_url.replace("127.0.0.1", "hooks.rebind.test")
    # when
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("slack").send(chat_message("slack", url))
    # then
    assert caught.value.message == (
        "Slack webhook URL refused: The connection reached 127.0.0.1, which is not a public address."
    )
    assert chat.received() == []


def test_the_webhook_url_is_not_logged_nor_kept_in_errors(chat, caplog):
    chat.answer_next(SLACK_PATH, (500, {}, "oops"))
    with caplog.at_level(logging.INFO, logger="beacon.chat"):
        with pytest.raises(ProviderUnavailable) as caught:
            provider_for_channel("slack").send(chat_message("slack", chat.slack_url))
    assert caplog.messages == ["slack webhook at 127.0.0.1 answered HTTP 500"]
    assert "slacktoken0001" not in caught.value.message
    # a connection failure's message names the class, not requests' text (which has the URL)
    closed = chat.slack_url.replace(str(chat._server.server_address[1]), str(free_port()))
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("slack").send(chat_message("slack", closed))
    assert caught.value.message == "Slack could not be reached: ConnectionError"
