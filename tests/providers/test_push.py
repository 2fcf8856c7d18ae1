"""The push adapters (FCM HTTP v1 and Web Push) against the local doubles: the real
google-auth, pyfcm and pywebpush clients speaking to them over loopback."""

import json
import re
import time
import traceback
import types
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.test import override_settings

from providers.base import (
    OutboundMessage,
    ProviderConfigurationError,
    ProviderError,
    ProviderUnavailable,
    RecipientRejected,
)
from providers.console import ConsoleProvider
from providers.push import FcmProvider, WebPushProvider
from providers.push_payload import WEB_PUSH_OVERHEAD, encoded, fcm_message_fields, web_push_payload
from providers.registry import provider_for_channel, providers_configuration, reset_providers
from tests.doubles import fcm as fcm_double
from tests.doubles import webpush as webpush_double

TITLE = "Booking confirmed"
BODY = "Haircut at 10:00 with Ana"
IMAGE = "https://cdn.beacon.example/ana.png"
ACTION = "https://app.beacon.example/bookings/42"
FCM_SEND_PATH = f"/v1/projects/{fcm_double.PROJECT_ID}/messages:send"


def push(to: str, **overrides) -> OutboundMessage:
    fields = {
        "channel": "push",
        "to": to,
        "subject": TITLE,
        "body": BODY,
        "reference": str(uuid.uuid4()),
        "options": {},
        "target": {"platform": "android"},
    }
    fields.update(overrides)
    return OutboundMessage(**fields)


def web_push(subscription: dict, **overrides) -> OutboundMessage:
    overrides.setdefault("target", {"platform": "web", "subscription": subscription["keys"]})
    return push(subscription["endpoint"], **overrides)


def fcm_provider() -> FcmProvider:
    provider = provider_for_channel("push", "device-token")
    assert isinstance(provider, FcmProvider)
    return provider


def webpush_provider() -> WebPushProvider:
    provider = provider_for_channel("push", "https://push.example/x")
    assert isinstance(provider, WebPushProvider)
    return provider


def other_rsa_pem() -> str:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


def error_text(error: BaseException) -> str:
    """Everything an error would show in a log: its message and its causes' tracebacks."""
    return "".join(traceback.format_exception(error)) + repr(error)


@pytest.fixture
def answers(fcm, monkeypatch):
    """A spy on the FCM double's HTTP side: every (path, status) it answered, 401s included."""
    seen = []
    answer = fcm.answer

    def spy(path, headers, body):
        status, extra, reply = answer(path, headers, body)
        seen.append((path, status))
        return status, extra, reply

    monkeypatch.setattr(fcm, "answer", spy)
    return seen


@pytest.fixture
def webpush(fcm, webpush_server):
    """The Web Push double, emptied, with the push settings applied (by `fcm`)."""
    return webpush_server


# --- FCM: what is sent ---------------------------------------------------------------


def test_fcm_send_reaches_the_double_as_a_v1_message(fcm):
    # given
    message = push(
        "device-token-1",
        options={
            "image_url": IMAGE,
            "action_url": ACTION,
            "data": {"booking": 42, "paid": True, "room": "B"},
            "android": {"ttl": "3600s", "notification": {"channel_id": "bookings"}},
            "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"sound": "default"}}},
            "webpush": {"headers": {"Urgency": "high"}},
        },
    )
    # when
    result = fcm_provider().send(message)
    # then
    assert fcm.received() == [
        {
            "message": {
                "token": "device-token-1",
                "notification": {"title": TITLE, "body": BODY, "image": IMAGE},
                "data": {
                    "booking": "42",
                    "paid": "True",
                    "room": "B",
                    "action_url": ACTION,
                    "beacon_delivery": message.reference,
                },
                "android": {"ttl": "3600s", "notification": {"channel_id": "bookings"}},
                "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"sound": "default"}}},
                "webpush": {"fcm_options": {"link": ACTION}, "headers": {"Urgency": "high"}},
            },
            "token": "device-token-1",
            "validate_only": False,
            "authorization": fcm.received()[0]["authorization"],
            "status": 200,
            "name": fcm.received()[0]["name"],
        }
    ]
    name = fcm.received()[0]["name"]
    assert re.fullmatch(rf"projects/{fcm_double.PROJECT_ID}/messages/\d+", name)
    assert (result.provider_message_id, result.status, result.response_code) == (name, "sent", 200)
    # the bearer token is one the double issued, through the service account's assertion
    token = fcm.received()[0]["authorization"].removeprefix("Bearer ")
    assert fcm.received()[0]["authorization"] == f"Bearer {token}"
    assert token.startswith("ya29.") and token in fcm.tokens
    assert fcm.tokens_issued == 1
    assert [request["claims"]["iss"] for request in fcm.token_requests] == [fcm.client_email]
    assert fcm.token_requests[0]["claims"]["scope"] == fcm_double.SCOPE


def test_fcm_plain_message_has_only_the_notification_and_the_reference(fcm):
    message = push("device-token-2")
    fcm_provider().send(message)
    assert fcm.received()[0]["message"] == {
        "token": "device-token-2",
        "notification": {"title": TITLE, "body": BODY},
        "data": {"beacon_delivery": message.reference},
    }


def test_fcm_web_link_only_for_an_https_action_url(fcm):
    # given: an http action URL: apps get it in the data, browsers get no link
    message = push("device-token-3", options={"action_url": "http://app.beacon.example/x"})
    # when
    fcm_provider().send(message)
    # then
    assert fcm.received()[0]["message"] == {
        "token": "device-token-3",
        "notification": {"title": TITLE, "body": BODY},
        "data": {"action_url": "http://app.beacon.example/x", "beacon_delivery": message.reference},
    }


def test_fcm_silent_push_has_data_and_background_options_merged_with_the_given_ones(fcm):
    # given
    message = push(
        "device-token-4",
        options={
            "silent": True,
            "action_url": ACTION,
            "data": {"kind": "sync", "version": 7},
            "android": {"ttl": "60s"},
            "apns": {"headers": {"apns-collapse-id": "sync"}, "payload": {"aps": {"badge": 3}}},
        },
    )
    # when
    fcm_provider().send(message)
    # then: no notification block, no web link
    assert fcm.received()[0]["message"] == {
        "token": "device-token-4",
        "data": {"kind": "sync", "version": "7", "action_url": ACTION, "beacon_delivery": message.reference},
        "android": {"priority": "normal", "ttl": "60s"},
        "apns": {
            "headers": {"apns-push-type": "background", "apns-priority": "5", "apns-collapse-id": "sync"},
            "payload": {"aps": {"content-available": 1, "badge": 3}},
        },
    }
    assert fcm.received()[0]["status"] == 200


def test_fcm_payload_at_the_limit_is_sent(fcm):
    # given: data padded so that the message's fields are exactly 4096 bytes
    reference = str(uuid.uuid4())
    base = len(encoded(fcm_message_fields(title=TITLE, body=BODY, options={"data": {"pad": ""}}, reference=reference)))
    options = {"data": {"pad": "x" * (4096 - base)}}
    assert len(encoded(fcm_message_fields(title=TITLE, body=BODY, options=options, reference=reference))) == 4096
    # when
    fcm_provider().send(push("device-token-5", options=options, reference=reference))
    # then
    assert [r["status"] for r in fcm.received()] == [200]


def test_fcm_payload_over_the_limit_is_refused_before_any_request(fcm):
    # given
    message = push("device-token-6", options={"data": {"blob": "x" * 5000}})
    size = len(
        encoded(fcm_message_fields(title=TITLE, body=BODY, options=message.options, reference=message.reference))
    )
    # when
    with pytest.raises(RecipientRejected) as caught:
        fcm_provider().send(message)
    # then
    assert caught.value.code == "payload_too_large"
    assert caught.value.retryable is False
    assert caught.value.gone is False
    assert caught.value.message == f"The push payload is {size} bytes; the limit is 4096."
    assert fcm.received() == []
    assert fcm.tokens_issued == 0


# --- FCM: refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "status", "code", "text"),
    [
        ("unregistered-abc", 404, "UNREGISTERED", fcm_double.NOT_FOUND_MESSAGE),
        ("notfound-abc", 404, "NOT_FOUND", fcm_double.NOT_FOUND_MESSAGE),
        ("invalid-abc", 400, "INVALID_ARGUMENT", fcm_double.INVALID_TOKEN_MESSAGE),
    ],
)
def test_fcm_gone_tokens_are_permanent_and_gone(fcm, token, status, code, text):
    with pytest.raises(RecipientRejected) as caught:
        fcm_provider().send(push(token))
    assert caught.value.gone is True
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert caught.value.message == f"FCM answered HTTP {status} {code}: {text}"
    assert [(r["token"], r["status"]) for r in fcm.received()] == [(token, status)]


@pytest.mark.parametrize("answer", ["MESSAGE_TOO_BIG", "INVALID_ARGUMENT"])
def test_fcm_invalid_argument_not_about_the_token_is_not_gone(fcm, answer):
    # given
    fcm.answer_next(getattr(fcm_double, answer))
    # when
    with pytest.raises(RecipientRejected) as caught:
        fcm_provider().send(push("device-token-7"))
    # then
    assert caught.value.gone is False
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == f"FCM answered HTTP 400 INVALID_ARGUMENT: {fcm_double.INVALID_ARGUMENT_MESSAGE}"


def test_fcm_quota_is_retryable_after_retry_after_without_sleeping_or_retrying(fcm):
    # when
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        fcm_provider().send(push("quota-abc"))
    elapsed = time.monotonic() - started
    # then
    assert elapsed < 2
    assert caught.value.retryable is True
    assert (caught.value.status_code, caught.value.retry_after, caught.value.code) == (429, 30.0, "QUOTA_EXCEEDED")
    assert caught.value.gone is False
    assert [(r["token"], r["status"]) for r in fcm.received()] == [("quota-abc", 429)]


@pytest.mark.parametrize(
    ("token", "status", "code"), [("unavailable-abc", 503, "UNAVAILABLE"), ("internal-abc", 500, "INTERNAL")]
)
def test_fcm_server_errors_are_retryable_without_transport_retries(fcm, token, status, code):
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        fcm_provider().send(push(token))
    assert time.monotonic() - started < 2
    assert caught.value.retryable is True
    assert (caught.value.status_code, caught.value.code, caught.value.retry_after) == (status, code, None)
    assert [(r["token"], r["status"]) for r in fcm.received()] == [(token, status)]


def test_fcm_sender_id_mismatch_is_permanent_but_not_gone(fcm):
    with pytest.raises(RecipientRejected) as caught:
        fcm_provider().send(push("mismatch-abc"))
    assert caught.value.retryable is False
    assert caught.value.gone is False
    assert (caught.value.status_code, caught.value.code) == (403, "SENDER_ID_MISMATCH")
    assert caught.value.message == "FCM answered HTTP 403 SENDER_ID_MISMATCH: SenderId mismatch"


def test_fcm_refusals_are_classified_by_their_error_code_whatever_the_token(fcm):
    # given: FCM's answers scripted for an ordinary token
    fcm.answer_next(fcm_double.UNREGISTERED, fcm_double.QUOTA_EXCEEDED, fcm_double.INVALID_REGISTRATION)
    provider = fcm_provider()
    errors = []
    # when
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            provider.send(push("device-token-8"))
        errors.append(caught.value)
    # then
    assert [(type(e), e.code, e.gone, e.retryable) for e in errors] == [
        (RecipientRejected, "UNREGISTERED", True, False),
        (ProviderUnavailable, "QUOTA_EXCEEDED", False, True),
        (RecipientRejected, "INVALID_ARGUMENT", True, False),
    ]
    assert errors[1].retry_after == 30.0


# --- FCM: the OAuth token and the connection -------------------------------------------


def test_fcm_expired_token_is_renewed_and_the_message_sent_once_more(fcm, answers):
    # given
    provider = fcm_provider()
    provider.send(push("device-token-9"))
    first_authorization = fcm.received()[0]["authorization"]
    fcm.expire_tokens()
    # when
    result = provider.send(push("device-token-10"))
    # then
    assert answers == [
        ("/token", 200),
        (FCM_SEND_PATH, 200),
        (FCM_SEND_PATH, 401),
        ("/token", 200),
        (FCM_SEND_PATH, 200),
    ]
    assert fcm.tokens_issued == 2
    assert [(r["token"], r["status"]) for r in fcm.received()] == [("device-token-9", 200), ("device-token-10", 200)]
    second_authorization = fcm.received()[1]["authorization"]
    assert second_authorization != first_authorization
    assert second_authorization.removeprefix("Bearer ") in fcm.tokens
    assert result.provider_message_id == fcm.received()[1]["name"]


def test_fcm_keeps_its_connection_and_its_token(fcm, answers):
    # when
    provider = fcm_provider()
    for index in range(20):
        provider.send(push(f"device-token-{index}"))
    # then: one token fetch (google-auth's own connection) and one kept-open connection for the 20 sends
    assert [r["status"] for r in fcm.received()] == [200] * 20
    assert fcm.tokens_issued == 1
    assert answers.count(("/token", 200)) == 1
    assert fcm.connections == 2
    assert provider_for_channel("push", "device-token") is provider


def test_fcm_sends_on_one_connection_once_the_token_is_fetched(fcm):
    # given: a first send fetched the token
    provider = fcm_provider()
    provider.send(push("device-token-a"))
    connections = fcm.connections
    # when
    for index in range(19):
        provider.send(push(f"device-token-b{index}"))
    # then
    assert fcm.connections == connections
    assert fcm.tokens_issued == 1
    assert len(fcm.delivered()) == 20


# --- FCM: configuration ------------------------------------------------------------------


def test_fcm_without_a_service_account_is_a_configuration_problem(fcm):
    with override_settings(FCM_SERVICE_ACCOUNT_JSON="", FCM_SERVICE_ACCOUNT_FILE=""):
        reset_providers()
        provider = fcm_provider()
        assert provider.check_configuration() == ["Set FCM_SERVICE_ACCOUNT_JSON or FCM_SERVICE_ACCOUNT_FILE."]
        assert providers_configuration()["push"] == {
            "provider": "fcm",
            "configured": False,
            "problems": ["Set FCM_SERVICE_ACCOUNT_JSON or FCM_SERVICE_ACCOUNT_FILE."],
        }
        with pytest.raises(ProviderConfigurationError) as caught:
            provider.send(push("device-token-11"))
    assert caught.value.retryable is False
    assert caught.value.message == "Set FCM_SERVICE_ACCOUNT_JSON or FCM_SERVICE_ACCOUNT_FILE."
    assert fcm.received() == []


def test_fcm_configured_reports_ready(fcm):
    assert fcm_provider().check_configuration() == []
    assert providers_configuration()["push"] == {"provider": "fcm", "configured": True, "problems": []}
    assert fcm.tokens_issued == 0  # checking the configuration fetches nothing


def test_fcm_service_account_from_a_file(fcm, tmp_path):
    # given
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(fcm.service_account_info()), encoding="utf-8")
    with override_settings(FCM_SERVICE_ACCOUNT_JSON="", FCM_SERVICE_ACCOUNT_FILE=str(path)):
        reset_providers()
        provider = fcm_provider()
        # when
        assert provider.check_configuration() == []
        result = provider.send(push("device-token-12"))
    # then
    assert [(r["token"], r["status"]) for r in fcm.received()] == [("device-token-12", 200)]
    assert result.provider_message_id == fcm.received()[0]["name"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"FCM_SERVICE_ACCOUNT_JSON": "{not json"}, "FCM_SERVICE_ACCOUNT_JSON is not JSON."),
        ({"FCM_SERVICE_ACCOUNT_JSON": "[1, 2]"}, "The FCM service account lacks private_key or client_email."),
        (
            {"FCM_SERVICE_ACCOUNT_JSON": json.dumps({"client_email": "a@b.example"})},
            "The FCM service account lacks private_key or client_email.",
        ),
        (
            {"FCM_SERVICE_ACCOUNT_JSON": "", "FCM_SERVICE_ACCOUNT_FILE": "/nonexistent/beacon-sa.json"},
            "FCM_SERVICE_ACCOUNT_FILE cannot be read: FileNotFoundError",
        ),
    ],
    ids=["bad-json", "not-an-object", "no-key", "missing-file"],
)
def test_fcm_unusable_service_account_is_a_configuration_problem(fcm, overrides, problem):
    with override_settings(**overrides):
        reset_providers()
        provider = fcm_provider()
        assert provider.check_configuration() == [problem]
        with pytest.raises(ProviderConfigurationError) as caught:
            provider.send(push("device-token-13"))
    assert caught.value.message == problem
    assert caught.value.retryable is False
    assert fcm.received() == []


def test_fcm_bad_json_file_is_a_configuration_problem(fcm, tmp_path):
    path = tmp_path / "service-account.json"
    path.write_text("{not json", encoding="utf-8")
    with override_settings(FCM_SERVICE_ACCOUNT_JSON="", FCM_SERVICE_ACCOUNT_FILE=str(path)):
        reset_providers()
        assert fcm_provider().check_configuration() == ["FCM_SERVICE_ACCOUNT_FILE cannot be read: JSONDecodeError"]


def test_fcm_service_account_without_a_project_needs_fcm_project_id(fcm):
    # given
    info = fcm.service_account_info()
    del info["project_id"]
    with override_settings(FCM_SERVICE_ACCOUNT_JSON=json.dumps(info), FCM_PROJECT_ID=""):
        reset_providers()
        # then
        assert fcm_provider().check_configuration() == [
            "The FCM service account has no project_id; set FCM_PROJECT_ID."
        ]
    with override_settings(FCM_SERVICE_ACCOUNT_JSON=json.dumps(info), FCM_PROJECT_ID=fcm.project_id):
        reset_providers()
        fcm_provider().send(push("device-token-14"))
    assert [(r["token"], r["status"]) for r in fcm.received()] == [("device-token-14", 200)]


def test_fcm_project_id_setting_overrides_the_service_accounts_project(fcm, answers):
    # given: config/settings.py: "FCM_PROJECT_ID overrides the account's project"
    with override_settings(FCM_PROJECT_ID="other-project"):
        reset_providers()
        # when: the double knows no such project
        with pytest.raises(ProviderError):
            fcm_provider().send(push("device-token-15"))
    # then
    assert answers[-1] == ("/v1/projects/other-project/messages:send", 404)


def test_fcm_private_key_unusable_is_a_configuration_problem(fcm):
    info = fcm.service_account_info()
    info["private_key"] = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    with override_settings(FCM_SERVICE_ACCOUNT_JSON=json.dumps(info)):
        reset_providers()
        with pytest.raises(ProviderConfigurationError) as caught:
            fcm_provider().send(push("device-token-16"))
    assert caught.value.message.startswith("The FCM service account is not usable: ")
    assert caught.value.retryable is False
    assert "bm90IGEga2V5" not in error_text(caught.value)
    assert fcm.received() == [] and fcm.token_requests == []


def test_fcm_token_endpoint_refusal_is_a_configuration_problem_without_secrets(fcm):
    # given: the service account's key is not the one Google knows
    info = fcm.service_account_info()
    info["private_key"] = other_rsa_pem()
    with override_settings(FCM_SERVICE_ACCOUNT_JSON=json.dumps(info)):
        reset_providers()
        # when
        with pytest.raises(ProviderConfigurationError) as caught:
            fcm_provider().send(push("device-token-17"))
    # then
    assert caught.value.retryable is False
    assert caught.value.message.startswith("FCM refused the service account's token request: ")
    assert "invalid_grant" in caught.value.message
    assert [request["refused"] for request in fcm.token_requests] == [True]
    assert fcm.received() == []
    key_lines = [line for line in info["private_key"].splitlines() if "-----" not in line]
    text = error_text(caught.value)
    assert not any(line in text for line in key_lines)


def test_fcm_token_endpoint_unreachable_is_retryable(fcm):
    info = fcm.service_account_info()
    info["token_uri"] = "http://127.0.0.1:1/token"
    with override_settings(FCM_SERVICE_ACCOUNT_JSON=json.dumps(info)):
        reset_providers()
        with pytest.raises(ProviderUnavailable) as caught:
            fcm_provider().send(push("device-token-18"))
    assert caught.value.retryable is True
    assert caught.value.message == "The FCM token endpoint could not be reached."
    assert fcm.received() == []


def test_fcm_unreachable_is_retryable(fcm):
    with override_settings(FCM_API_BASE_URL="http://127.0.0.1:1"):
        reset_providers()
        with pytest.raises(ProviderUnavailable) as caught:
            fcm_provider().send(push("device-token-19"))
    assert caught.value.retryable is True
    assert caught.value.message == "FCM could not be reached: ConnectionError"


def test_fcm_errors_never_carry_the_private_key_or_the_bearer_token(fcm):
    # given
    provider = fcm_provider()
    provider.send(push("device-token-20"))
    bearer = fcm.received()[0]["authorization"].removeprefix("Bearer ")
    key_lines = [line for line in fcm.service_account_info()["private_key"].splitlines() if "-----" not in line]
    errors = []
    # when
    for token in ("unregistered-a", "invalid-a", "quota-a", "unavailable-a", "mismatch-a", "device-token-21"):
        if token == "device-token-21":
            fcm.answer_next(fcm_double.THIRD_PARTY_AUTH_ERROR)
        with pytest.raises(ProviderError) as caught:
            provider.send(push(token))
        errors.append(caught.value)
    # then
    assert len(errors) == 6
    assert errors[-1].status_code == 401
    for error in errors:
        text = error_text(error)
        assert bearer not in text
        assert not any(line in text for line in key_lines)


# --- Web Push: what is sent ------------------------------------------------------------------


def test_webpush_send_reaches_the_double_encrypted_and_signed(webpush):
    # given
    subscription = webpush.subscribe()
    message = web_push(
        subscription,
        options={"image_url": IMAGE, "action_url": ACTION, "data": {"booking": 42, "paid": False}},
    )
    # when
    before = time.time()
    result = webpush_provider().send(message)
    # then
    [received] = webpush.received()
    assert received["endpoint"] == subscription["endpoint"]
    assert received["payload"] == {
        "title": TITLE,
        "body": BODY,
        "image": IMAGE,
        "url": ACTION,
        "data": {"booking": "42", "paid": "False"},
        "beacon_delivery": message.reference,
    }
    assert received["payload"] == web_push_payload(
        title=TITLE, body=BODY, options=message.options, reference=message.reference
    )
    assert received["headers"] == {
        "ttl": str(settings.WEBPUSH_TTL_SECONDS),
        "urgency": "normal",
        "content-encoding": "aes128gcm",
    }
    claims = received["vapid_claims"]
    assert set(claims) == {"aud", "sub", "exp"}
    assert (claims["aud"], claims["sub"]) == (webpush.base_url, webpush_double.VAPID_SUBJECT)
    assert before < claims["exp"] <= time.time() + WebPushProvider.TOKEN_SECONDS
    assert received["vapid_key"] == webpush.vapid_public_key
    assert received["status"] == 201
    assert result.status == "sent"
    assert result.response_code == 201
    assert re.fullmatch(r"[0-9a-f]{32}", result.provider_message_id)


def test_webpush_ttl_follows_the_setting(webpush):
    subscription = webpush.subscribe()
    with override_settings(WEBPUSH_TTL_SECONDS=600):
        reset_providers()
        webpush_provider().send(web_push(subscription))
    assert webpush.received()[0]["headers"]["ttl"] == "600"


def test_webpush_silent_push_is_low_urgency(webpush):
    subscription = webpush.subscribe()
    message = web_push(subscription, options={"silent": True, "data": {"kind": "sync"}})
    webpush_provider().send(message)
    [received] = webpush.received()
    assert received["headers"]["urgency"] == "low"
    assert received["payload"] == {
        "title": TITLE,
        "body": BODY,
        "data": {"kind": "sync"},
        "silent": True,
        "beacon_delivery": message.reference,
    }


def test_webpush_payload_at_the_limit_is_sent_and_one_byte_more_is_refused_before_sending(webpush):
    # given: a payload whose encrypted body is exactly the push services' 4096 bytes
    subscription = webpush.subscribe()
    reference = str(uuid.uuid4())
    base = len(encoded(web_push_payload(title=TITLE, body=BODY, options={"data": {"pad": ""}}, reference=reference)))
    fits = {"data": {"pad": "x" * (4096 - WEB_PUSH_OVERHEAD - base)}}
    too_big = {"data": {"pad": "x" * (4097 - WEB_PUSH_OVERHEAD - base)}}
    provider = webpush_provider()
    # when
    provider.send(web_push(subscription, options=fits, reference=reference))
    with pytest.raises(RecipientRejected) as caught:
        provider.send(web_push(subscription, options=too_big, reference=reference))
    # then
    assert [r["status"] for r in webpush.received()] == [201]
    assert caught.value.code == "payload_too_large"
    assert caught.value.retryable is False
    assert caught.value.message == "The push payload is 4097 bytes; the limit is 4096."


def test_webpush_payload_far_over_the_limit_is_refused_before_sending(webpush):
    subscription = webpush.subscribe()
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(web_push(subscription, options={"data": {"blob": "x" * 5000}}))
    assert caught.value.code == "payload_too_large"
    assert webpush.received() == []


# --- Web Push: VAPID -------------------------------------------------------------------------


def test_webpush_signs_once_per_origin(webpush, monkeypatch):
    # given: a spy on the provider's VAPID key
    provider = webpush_provider()
    vapid = provider.vapid()
    signed = []
    sign = vapid.sign

    def spy(claims, *args, **kwargs):
        signed.append(claims)
        return sign(claims, *args, **kwargs)

    monkeypatch.setattr(vapid, "sign", spy)
    subscriptions = [webpush.subscribe() for _ in range(3)]
    # when
    for subscription in subscriptions * 2:
        provider.send(web_push(subscription))
    # then
    assert len(signed) == 1
    assert signed[0]["aud"] == webpush.base_url
    assert [r["status"] for r in webpush.received()] == [201] * 6
    assert {json.dumps(r["vapid_claims"], sort_keys=True) for r in webpush.received()} == {
        json.dumps(signed[0], sort_keys=True)
    }


def test_webpush_signs_fresh_claims_an_hour_before_the_token_expires(webpush, monkeypatch):
    # given: a first send signed now
    provider = webpush_provider()
    vapid = provider.vapid()
    signed = []
    sign = vapid.sign

    def spy(claims, *args, **kwargs):
        signed.append(claims)
        return sign(claims, *args, **kwargs)

    monkeypatch.setattr(vapid, "sign", spy)
    subscription = webpush.subscribe()
    provider.send(web_push(subscription))
    # when: 11 hours and a half later (the double still accepts an exp within 24 h of its clock)
    later = time.time() + 11.5 * 3600
    monkeypatch.setattr("providers.push.time", types.SimpleNamespace(time=lambda: later))
    provider.send(web_push(subscription))
    # then
    assert len(signed) == 2
    assert signed[0] is not signed[1]
    assert signed[1]["exp"] == int(later) + WebPushProvider.TOKEN_SECONDS
    assert signed[1]["exp"] > signed[0]["exp"] > time.time()
    assert [r["vapid_claims"]["exp"] for r in webpush.received()] == [signed[0]["exp"], signed[1]["exp"]]
    assert [r["status"] for r in webpush.received()] == [201, 201]


def test_webpush_pem_vapid_key_works_as_the_der_form(webpush):
    subscription = webpush.subscribe()
    with override_settings(VAPID_PRIVATE_KEY=webpush.vapid_private_key_pem):
        reset_providers()
        provider = webpush_provider()
        assert provider.check_configuration() == []
        provider.send(web_push(subscription))
    [received] = webpush.received()
    assert (received["status"], received["vapid_key"]) == (201, webpush.vapid_public_key)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"VAPID_PRIVATE_KEY": ""}, "Set VAPID_PRIVATE_KEY (and VAPID_SUBJECT) for Web Push."),
        ({"VAPID_PRIVATE_KEY": "  \n"}, "Set VAPID_PRIVATE_KEY (and VAPID_SUBJECT) for Web Push."),
        ({"VAPID_SUBJECT": "ops@beacon.test"}, "VAPID_SUBJECT must be a mailto: or https: URL."),
        ({"VAPID_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}, None),
    ],
    ids=["no-key", "blank-key", "bad-subject", "bad-pem"],
)
def test_webpush_vapid_misconfiguration(webpush, overrides, problem):
    subscription = webpush.subscribe()
    with override_settings(**overrides):
        reset_providers()
        provider = webpush_provider()
        problems = provider.check_configuration()
        with pytest.raises(ProviderConfigurationError) as caught:
            provider.send(web_push(subscription))
    if problem is None:
        assert problems == [caught.value.message]
        assert caught.value.message.startswith("VAPID_PRIVATE_KEY is not a usable key: ")
        assert "AAAA" not in caught.value.message
    else:
        assert problems == [problem]
        assert caught.value.message == problem
    assert caught.value.retryable is False
    assert webpush.received() == []


# --- Web Push: refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status"), [(webpush_double.GONE, 410), (webpush_double.NOT_FOUND, 404)], ids=["410", "404"]
)
def test_webpush_gone_subscriptions(webpush, answer, status):
    # given
    subscription = webpush.subscribe(answer=answer)
    # when
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(web_push(subscription))
    # then
    assert caught.value.gone is True
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (status, "gone")
    assert caught.value.message == f"The push service at 127.0.0.1 answered HTTP {status}: the subscription is gone"
    assert subscription["endpoint"] not in error_text(caught.value)
    assert [r["status"] for r in webpush.received()] == [status]


def test_webpush_unsubscribed_and_unknown_subscriptions_are_gone(webpush):
    subscription = webpush.subscribe()
    webpush.unsubscribe(subscription)
    unknown = {**webpush.subscribe(), "endpoint": f"{webpush.base_url}/push/no-such-subscription"}
    provider = webpush_provider()
    for target in (subscription, unknown):
        with pytest.raises(RecipientRejected) as caught:
            provider.send(web_push(target))
        assert caught.value.gone is True
    assert [r["status"] for r in webpush.received()] == [410]


def test_webpush_429_is_retryable_after_retry_after(webpush):
    webpush.answer_next(webpush_double.too_many_requests(20))
    with pytest.raises(ProviderUnavailable) as caught:
        webpush_provider().send(web_push(webpush.subscribe()))
    assert caught.value.retryable is True
    assert (caught.value.status_code, caught.value.retry_after, caught.value.code) == (429, 20.0, "429")
    assert caught.value.gone is False
    assert [r["status"] for r in webpush.received()] == [429]


@pytest.mark.parametrize("answer", [webpush_double.SERVER_ERROR, webpush_double.UNAVAILABLE], ids=["500", "503"])
def test_webpush_server_errors_are_retryable(webpush, answer):
    webpush.answer_next(answer)
    with pytest.raises(ProviderUnavailable) as caught:
        webpush_provider().send(web_push(webpush.subscribe()))
    assert caught.value.status_code == answer[0]
    assert [r["status"] for r in webpush.received()] == [answer[0]]


def test_webpush_413_is_payload_too_large(webpush):
    webpush.answer_next(webpush_double.PAYLOAD_TOO_LARGE)
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(web_push(webpush.subscribe()))
    assert (caught.value.status_code, caught.value.code, caught.value.gone) == (413, "payload_too_large", False)
    assert caught.value.retryable is False
    assert caught.value.message == "The push service at 127.0.0.1 answered HTTP 413: the payload is too large"


@pytest.mark.parametrize("answer", [webpush_double.UNAUTHORIZED, webpush_double.INVALID_VAPID], ids=["401", "403"])
def test_webpush_vapid_refusal_is_a_configuration_problem(webpush, answer):
    webpush.answer_next(answer)
    with pytest.raises(ProviderConfigurationError) as caught:
        webpush_provider().send(web_push(webpush.subscribe()))
    assert (caught.value.status_code, caught.value.retryable) == (answer[0], False)


def test_webpush_subscription_of_another_application_server_key_is_refused(webpush):
    # given: the browser subscribed with another VAPID key than ours
    subscription = webpush.subscribe(application_server_key=webpush_double.b64url(b"\x04" + b"\x01" * 64))
    with pytest.raises(ProviderConfigurationError) as caught:
        webpush_provider().send(web_push(subscription))
    assert caught.value.status_code == 403


@pytest.mark.parametrize(
    "device",
    [{"platform": "web"}, {"platform": "web", "subscription": {}}, None],
    ids=["no-subscription", "empty-subscription", "no-device"],
)
def test_webpush_subscription_without_keys_is_rejected(webpush, device):
    subscription = webpush.subscribe()
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(push(subscription["endpoint"], target=device))
    assert caught.value.code == "no_keys"
    assert caught.value.retryable is False
    assert webpush.received() == []


@pytest.mark.parametrize("missing", ["p256dh", "auth"])
def test_webpush_subscription_missing_one_key_is_rejected(webpush, missing):
    subscription = webpush.subscribe()
    keys = {name: value for name, value in subscription["keys"].items() if name != missing}
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(web_push(subscription, target={"platform": "web", "subscription": keys}))
    assert caught.value.code == "no_keys"
    assert webpush.received() == []


@pytest.mark.parametrize(
    "p256dh", ["not-a-key", "AAAA", webpush_double.b64url(b"\x04" + b"\x01" * 31)], ids=["not-base64", "short", "half"]
)
def test_webpush_malformed_p256dh_is_a_bad_subscription(webpush, p256dh):
    subscription = webpush.subscribe()
    keys = {**subscription["keys"], "p256dh": p256dh}
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(web_push(subscription, target={"platform": "web", "subscription": keys}))
    assert caught.value.code == "bad_subscription"
    assert caught.value.retryable is False
    assert caught.value.message == "The Web Push subscription's keys are not usable."
    assert webpush.received() == []


def test_webpush_p256dh_off_the_curve_is_a_bad_subscription(webpush):
    # given: the right length and prefix, but no point of P-256
    subscription = webpush.subscribe()
    keys = {**subscription["keys"], "p256dh": webpush_double.b64url(b"\x04" + b"\x00" * 64)}
    # when
    with pytest.raises(ProviderError) as caught:
        webpush_provider().send(web_push(subscription, target={"platform": "web", "subscription": keys}))
    # then
    assert webpush.received() == []
    assert (type(caught.value), caught.value.code, caught.value.retryable) == (
        RecipientRejected,
        "bad_subscription",
        False,
    )


# --- Web Push: the endpoint is an outbound URL ---------------------------------------------------


def test_webpush_private_endpoint_is_refused_when_private_targets_are_not_allowed(webpush):
    # given
    subscription = webpush.subscribe()
    with override_settings(BEACON_ALLOW_PRIVATE_TARGETS=False):
        reset_providers()
        # when
        with pytest.raises(RecipientRejected) as caught:
            webpush_provider().send(web_push(subscription))
    # then
    assert caught.value.code == "unsafe_target"
    assert caught.value.retryable is False
    assert caught.value.message == "Web Push endpoint refused: 127.0.0.1 is not a public address."
    assert subscription["endpoint"] not in error_text(caught.value)
    assert webpush.received() == []
    assert webpush.connections == 0


def test_webpush_redirect_is_not_followed(webpush):
    # given
    webpush.answer_next((307, {"Location": "http://127.0.0.1:1/x"}, None))
    subscription = webpush.subscribe()
    # when
    with pytest.raises(RecipientRejected) as caught:
        webpush_provider().send(web_push(subscription))
    # then
    assert caught.value.code == "redirect"
    assert caught.value.retryable is False
    assert caught.value.message == "The push service at 127.0.0.1 answered HTTP 307: a redirect, which is not followed"
    assert caught.value.status_code == 307
    assert [r["status"] for r in webpush.received()] == [307]


def test_webpush_unreachable_push_service_is_retryable_without_the_endpoint_in_the_message(webpush):
    subscription = webpush.subscribe()
    target = {**subscription, "endpoint": "http://127.0.0.1:1/push/secret-subscription-id"}
    with pytest.raises(ProviderUnavailable) as caught:
        webpush_provider().send(web_push(target))
    assert caught.value.message == "The push service could not be reached: ConnectionError"
    assert "secret-subscription-id" not in caught.value.message


def test_webpush_keeps_its_connection(webpush):
    provider = webpush_provider()
    subscriptions = [webpush.subscribe() for _ in range(5)]
    for subscription in subscriptions * 2:
        provider.send(web_push(subscription))
    assert [r["status"] for r in webpush.received()] == [201] * 10
    assert webpush.connections == 1


# --- Registry and routing ------------------------------------------------------------------------


def test_push_routes_tokens_to_fcm_and_endpoints_to_webpush(fcm):
    assert type(provider_for_channel("push", "tok")) is FcmProvider
    assert type(provider_for_channel("push", "https://push.example/x")) is WebPushProvider
    assert type(provider_for_channel("push", "http://127.0.0.1:8080/push/x")) is WebPushProvider
    assert type(provider_for_channel("push")) is FcmProvider
    assert provider_for_channel("push", "tok") is provider_for_channel("push", "other-token")


def test_console_push_takes_every_address(fcm):
    with override_settings(BEACON_PUSH_PROVIDER="console"):
        reset_providers()
        assert type(provider_for_channel("push", "tok")) is ConsoleProvider
        assert type(provider_for_channel("push", "https://push.example/x")) is ConsoleProvider
        result = provider_for_channel("push", "https://push.example/x").send(push("https://push.example/x"))
    assert result.provider_message_id.startswith("console-")
    assert fcm.received() == []


def test_webpush_configured_sends_tokens_to_webpush_too(fcm):
    # Only URLs are routed; with webpush configured a token stays with it (and is no URL it can reach).
    with override_settings(BEACON_PUSH_PROVIDER="webpush"):
        reset_providers()
        assert type(provider_for_channel("push", "tok")) is WebPushProvider
        assert type(provider_for_channel("push", "https://push.example/x")) is WebPushProvider
        assert providers_configuration()["push"] == {"provider": "webpush", "configured": True, "problems": []}
