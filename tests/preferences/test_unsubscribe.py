"""One-click unsubscribe (RFC 8058): a marketing email carries List-Unsubscribe with a
signed per-recipient link and List-Unsubscribe-Post; a cookieless POST to the link opts the
recipient out of marketing email and records the withdrawal; a GET only shows a page."""

import re
from urllib.parse import urlparse

import pytest
from django.core import signing
from django.test import Client

from notifications.models import Delivery
from notifications.unsubscribe import SALT, unsubscribe_claims, unsubscribe_headers, unsubscribe_token
from preferences.models import ConsentRecord, RecipientPreference
from preferences.services import consent_record
from tests.notifications.factories import SEND_URL, email_request, make_recipient

pytestmark = pytest.mark.django_db

BATCH_URL = "/api/v1/notifications/send/batch/"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
OPTED_OUT = [{"category": "marketing", "channel": "email"}]


def consenting(account, email="ana@example.com", **fields):
    """A recipient who agreed to marketing email (without it, marketing is not sent at all)."""
    recipient = make_recipient(account, email=email, **fields)
    consent_record(account=account, recipient=recipient, channel="email", category="marketing", granted=True)
    return recipient


def send(client, capture, body) -> Delivery:
    with capture(execute=True):
        response = client.post(SEND_URL, body, format="json")
    assert response.status_code == 202
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def link_of(message) -> str:
    # A long header is folded after its name; unfolded, the value is the <URL>.
    match = re.fullmatch(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]).strip())
    assert match, message["List-Unsubscribe"]
    return match.group(1)


def cookieless() -> Client:
    """A client with no session or CSRF cookie, that would fail any CSRF check: a mail client."""
    return Client(enforce_csrf_checks=True)


def opt_outs(recipient) -> list:
    preference = RecipientPreference.objects.filter(recipient=recipient).first()
    return preference.opt_outs if preference else None


def withdrawals(recipient) -> list:
    return list(
        ConsentRecord.objects.filter(recipient=recipient, granted=False).values_list(
            "channel", "category", "method", "detail"
        )
    )


@pytest.fixture
def ana(alice):
    return consenting(alice)


@pytest.fixture
def marketing_email(alice, alice_api, ana, smtp, django_capture_on_commit_callbacks):
    """A marketing email to Ana, as the real SMTP server received it."""
    delivery = send(alice_api, django_capture_on_commit_callbacks, email_request(category="marketing"))
    assert delivery.status == "sent"
    assert len(smtp.messages) == 1
    return smtp.messages[0]["message"]


def test_a_marketing_email_carries_both_headers_with_a_link_for_its_recipient(alice, ana, marketing_email, settings):
    # then
    link = link_of(marketing_email)
    assert marketing_email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith(settings.PUBLIC_BASE_URL + "/u/")
    assert link.endswith("/")
    claims = unsubscribe_claims(urlparse(link).path.split("/")[2])
    assert (claims.account_id, claims.recipient_id, claims.channel, claims.category) == (
        alice.pk,
        ana.pk,
        "email",
        "marketing",
    )


@pytest.mark.parametrize("category", ["transactional", "system"])
def test_other_email_carries_no_unsubscribe_headers(alice_api, ana, smtp, django_capture_on_commit_callbacks, category):
    send(alice_api, django_capture_on_commit_callbacks, email_request(category=category))
    message = smtp.messages[0]["message"]
    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None


def test_a_one_click_post_unsubscribes_without_cookies(ana, marketing_email):
    # when: what a mail client sends (RFC 8058): a POST with List-Unsubscribe=One-Click, no cookies
    response = cookieless().post(urlparse(link_of(marketing_email)).path, ONE_CLICK)
    # then
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert not response.cookies
    assert opt_outs(ana) == OPTED_OUT
    assert withdrawals(ana) == [("email", "marketing", "link", "one-click request")]
    record = ConsentRecord.objects.filter(recipient=ana).first()
    assert record.granted is False
    assert record.account == ana.account


def test_a_get_shows_the_page_and_changes_nothing(ana, marketing_email):
    # when: a link scanner or a person opens the link
    path = urlparse(link_of(marketing_email)).path
    response = cookieless().get(path)
    # then
    assert response.status_code == 200
    page = response.content.decode()
    assert '<form method="post" action="">' in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert not response.cookies
    assert "no-store" in response["Cache-Control"]
    assert opt_outs(ana) is None
    assert withdrawals(ana) == []
    assert ConsentRecord.objects.count() == 1  # the grant


def test_the_pages_form_unsubscribes(ana, marketing_email):
    path = urlparse(link_of(marketing_email)).path
    client = cookieless()
    client.get(path)
    response = client.post(path, {"List-Unsubscribe": "One-Click", "from": "page"})
    assert response.status_code == 200
    assert opt_outs(ana) == OPTED_OUT
    assert withdrawals(ana) == [("email", "marketing", "link", "unsubscribe page")]


def test_a_post_with_any_body_unsubscribes(ana, marketing_email):
    response = cookieless().post(urlparse(link_of(marketing_email)).path)
    assert response.status_code == 200
    assert opt_outs(ana) == OPTED_OUT


def test_unsubscribing_twice_changes_nothing_more(ana, marketing_email):
    path = urlparse(link_of(marketing_email)).path
    first = cookieless().post(path, ONE_CLICK)
    second = cookieless().post(path, ONE_CLICK)
    assert (first.status_code, second.status_code) == (200, 200)
    assert opt_outs(ana) == OPTED_OUT
    assert len(withdrawals(ana)) == 1


def test_after_unsubscribing_marketing_is_not_sent_but_bookings_still_are(
    alice_api, ana, marketing_email, smtp, django_capture_on_commit_callbacks
):
    # given
    cookieless().post(urlparse(link_of(marketing_email)).path, ONE_CLICK)
    # when
    marketing = send(alice_api, django_capture_on_commit_callbacks, email_request(category="marketing"))
    booking = send(alice_api, django_capture_on_commit_callbacks, email_request(category="transactional"))
    # then
    assert (marketing.status, marketing.error_message) == (
        "suppressed",
        "opted_out: the recipient opted out of marketing on email",
    )
    assert booking.status == "sent"
    assert len(smtp.messages) == 2


def test_a_new_grant_then_the_link_again_records_a_new_withdrawal(alice, ana, marketing_email):
    path = urlparse(link_of(marketing_email)).path
    cookieless().post(path, ONE_CLICK)
    consent_record(account=alice, recipient=ana, channel="email", category="marketing", granted=True)
    cookieless().post(path, ONE_CLICK)
    assert opt_outs(ana) == OPTED_OUT
    assert len(withdrawals(ana)) == 2


def test_other_opt_outs_and_preferences_are_kept(alice, ana):
    RecipientPreference.objects.create(
        account=alice, recipient=ana, quiet_hours_enabled=True, opt_outs=[{"category": "*", "channel": "sms"}]
    )
    token = unsubscribe_token(account_id=alice.pk, recipient_id=ana.pk)
    cookieless().post(f"/u/{token}/", ONE_CLICK)
    preference = RecipientPreference.objects.get(recipient=ana)
    assert preference.opt_outs == [{"category": "*", "channel": "sms"}, *OPTED_OUT]
    assert preference.quiet_hours_enabled is True


def forged_tokens(alice, ana, bob):
    good = unsubscribe_token(account_id=alice.pk, recipient_id=ana.pk)
    return {
        "tampered signature": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "tampered payload": "x" + good,
        "not a token": "hello",
        "another salt": signing.Signer(salt="other").sign_object([alice.pk, ana.pk, "email", "marketing"]),
        "expiring form": signing.dumps([alice.pk, ana.pk, "email", "marketing"], salt=SALT),
        "another account's recipient": unsubscribe_token(account_id=bob.pk, recipient_id=ana.pk),
        "no such recipient": unsubscribe_token(account_id=alice.pk, recipient_id=ana.pk + 1000),
        "missing fields": signing.Signer(salt=SALT).sign_object([alice.pk, ana.pk]),
        "not a list": signing.Signer(salt=SALT).sign_object({"a": alice.pk}),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "tampered signature",
        "tampered payload",
        "not a token",
        "another salt",
        "another account's recipient",
        "no such recipient",
        "missing fields",
        "not a list",
        "expiring form",
    ],
)
def test_a_bad_token_is_a_404_page_and_changes_nothing(alice, ana, bob, kind):
    token = forged_tokens(alice, ana, bob)[kind]
    for response in (cookieless().get(f"/u/{token}/"), cookieless().post(f"/u/{token}/", ONE_CLICK)):
        assert response.status_code == 404
        assert "Link not valid" in response.content.decode()
    assert RecipientPreference.objects.count() == 0
    assert withdrawals(ana) == []


def test_each_email_of_a_batch_links_to_its_own_recipient(alice, alice_api, smtp, django_capture_on_commit_callbacks):
    # given: three consenting recipients
    people = [consenting(alice, email=f"person{i}@example.com", phone=f"+1415555010{i}") for i in range(3)]
    body = {
        "channel": "email",
        "subject": "Spring offers",
        "message": "Ten percent off.",
        "category": "marketing",
        "recipients": [{"email": person.email, "context": {}} for person in people],
    }
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(BATCH_URL, body, format="json")
    # then
    assert response.status_code == 202
    assert len(smtp.messages) == 3
    linked = {}
    for received in smtp.messages:
        claims = unsubscribe_claims(urlparse(link_of(received["message"])).path.split("/")[2])
        linked[received["rcpt_tos"][0]] = claims.recipient_id
    assert linked == {person.email: person.pk for person in people}


def test_the_headers_name_the_public_url(settings):
    settings.PUBLIC_BASE_URL = "https://beacon.example.com"
    headers = unsubscribe_headers(account_id=1, recipient_id=2)
    assert re.fullmatch(r"<https://beacon\.example\.com/u/[^/]+/>", headers["List-Unsubscribe"])
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
