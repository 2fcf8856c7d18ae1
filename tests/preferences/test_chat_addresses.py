"""A recipient's chat webhook URLs through the preferences API: read, written, and guarded."""

import socket

import pytest

from notifications.models import Recipient

pytestmark = pytest.mark.django_db

SLACK = "https://hooks.slack.com/services/T0000001/B0000001/abc"
TEAMS = "https://example.webhook.office.com/webhookb2/1/IncomingWebhook/2/3"
DISCORD = "https://discord.com/api/webhooks/1200000000000000001/token"


def url_of(external_id: str) -> str:
    return f"/api/v1/preferences/{external_id}/"


@pytest.fixture
def public_dns(monkeypatch, settings):
    """Every name resolves to a public address (no DNS from tests); private targets refused."""
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_webhook_urls_are_written_and_read_back(alice, alice_api, public_dns):
    # when
    body = {"slack_webhook_url": SLACK, "teams_webhook_url": TEAMS, "discord_webhook_url": DISCORD}
    response = alice_api.patch(url_of("team-1"), body, format="json")
    # then
    assert response.status_code == 201, response.json()
    assert {name: response.json()[name] for name in body} == body
    recipient = Recipient.objects.get(account=alice, external_id="team-1")
    assert (recipient.slack_webhook_url, recipient.teams_webhook_url, recipient.discord_webhook_url) == (
        SLACK,
        TEAMS,
        DISCORD,
    )
    assert {name: alice_api.get(url_of("team-1")).json()[name] for name in body} == body
    # and a later write of another field keeps them
    alice_api.patch(url_of("team-1"), {"name": "Ops"}, format="json")
    assert alice_api.get(url_of("team-1")).json()["slack_webhook_url"] == SLACK
    # and blank clears one
    cleared = alice_api.patch(url_of("team-1"), {"slack_webhook_url": ""}, format="json")
    assert cleared.json()["slack_webhook_url"] == ""


@pytest.mark.parametrize(
    "url,message",
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is not a public address."),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address."),
        ("http://[::ffff:10.0.0.1]/hook", "::ffff:a00:1 is not a public address."),
    ],
)
def test_a_private_webhook_url_is_refused(alice, alice_api, public_dns, url, message):
    response = alice_api.patch(url_of("team-1"), {"discord_webhook_url": url}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"discord_webhook_url": [message]}
    assert not Recipient.objects.exists()


def test_a_name_resolving_to_a_private_address_is_refused(alice, alice_api, monkeypatch, settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *args, **kwargs: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))],
    )
    response = alice_api.patch(
        url_of("team-1"), {"slack_webhook_url": "https://hooks.internal.example/x"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "slack_webhook_url": ["hooks.internal.example resolves to 10.1.2.3, which is not a public address."]
    }


def test_a_private_webhook_url_is_accepted_when_allowed(alice, alice_api, settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    response = alice_api.patch(url_of("team-1"), {"teams_webhook_url": "http://127.0.0.1:9000/hook"}, format="json")
    assert response.status_code == 201, response.json()
    assert Recipient.objects.get(account=alice).teams_webhook_url == "http://127.0.0.1:9000/hook"


def test_a_non_http_url_is_refused(alice_api, settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    response = alice_api.patch(url_of("team-1"), {"slack_webhook_url": "ftp://127.0.0.1/x"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["slack_webhook_url"]
