"""The push doubles answer the real client libraries as FCM, Google's token endpoint and a
Web Push service do: google-auth and pyfcm against the FCM double, pywebpush against the Web
Push double, all over loopback."""

import base64
import json
import time

import google.auth.transport.requests
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from py_vapid import Vapid
from pyfcm import FCMNotification
from pyfcm.errors import AuthenticationError, FCMNotRegisteredError, InvalidDataError
from pywebpush import WebPushException, webpush

from tests.doubles.fcm import (
    SCOPE,
    UNAVAILABLE,
    fcm_server,  # noqa: F401 - fixture
    fcm_settings,
)
from tests.doubles.webpush import (
    webpush_server,  # noqa: F401 - fixture
    webpush_settings,
)


@pytest.fixture
def fcm_double(fcm_server):  # noqa: F811
    fcm_server.reset()
    yield fcm_server


@pytest.fixture
def push_double(webpush_server):  # noqa: F811
    webpush_server.reset()
    yield webpush_server


def credentials_for(double, scopes=(SCOPE,)):
    return service_account.Credentials.from_service_account_info(double.service_account_info(), scopes=list(scopes))


def pyfcm_for(double) -> FCMNotification:
    client = FCMNotification(credentials=credentials_for(double), project_id=double.project_id)
    client.FCM_END_POINT_BASE = f"{double.base_url}/v1/projects"
    return client


# --- Google's token endpoint ---------------------------------------------------------


def test_service_account_credentials_refresh_against_the_double(fcm_double):
    credentials = credentials_for(fcm_double)

    credentials.refresh(google.auth.transport.requests.Request())

    assert credentials.token.startswith("ya29.")
    assert credentials.valid
    assert fcm_double.tokens_issued == 1
    claims = fcm_double.token_requests[0]["claims"]
    assert claims["iss"] == fcm_double.client_email
    assert claims["scope"] == SCOPE


def test_an_assertion_signed_by_another_key_is_refused(fcm_double):
    info = fcm_double.service_account_info()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])

    with pytest.raises(RefreshError, match="invalid_grant"):
        credentials.refresh(google.auth.transport.requests.Request())
    assert fcm_double.tokens_issued == 0


def test_scopes_are_checked(fcm_double):
    with pytest.raises(RefreshError, match="invalid_scope"):
        credentials_for(fcm_double, scopes=()).refresh(google.auth.transport.requests.Request())
    credentials = credentials_for(fcm_double, scopes=("https://www.googleapis.com/auth/userinfo.email",))
    credentials.refresh(google.auth.transport.requests.Request())

    response = requests.post(
        fcm_double.send_url, json={"message": {"token": "t"}}, headers={"Authorization": f"Bearer {credentials.token}"}
    )

    assert response.status_code == 403
    assert response.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"


def test_the_settings_carry_the_service_account(fcm_double):
    settings = fcm_settings(fcm_double)

    info = json.loads(settings["FCM_SERVICE_ACCOUNT_JSON"])
    assert info["token_uri"] == f"{fcm_double.base_url}/token"
    assert info["project_id"] == "beacon-test"
    assert settings["FCM_API_BASE_URL"] == fcm_double.base_url
    assert settings["BEACON_PUSH_PROVIDER"] == "fcm"


# --- FCM HTTP v1 through pyfcm ---------------------------------------------------------


def test_pyfcm_sends_a_notification(fcm_double):
    result = pyfcm_for(fcm_double).notify(fcm_token="tok-1", notification_title="Hi", notification_body="There")

    assert result["name"].startswith("projects/beacon-test/messages/")
    assert result["name"].rsplit("/", 1)[1].isdigit()
    (sent,) = fcm_double.received()
    assert sent["token"] == "tok-1"
    assert sent["message"] == {"token": "tok-1", "notification": {"title": "Hi", "body": "There"}}
    assert sent["authorization"].startswith("Bearer ya29.")
    assert sent["status"] == 200 and sent["name"] == result["name"]
    assert fcm_double.sent_count() == 1


def test_validate_only_answers_a_fake_name(fcm_double):
    result = pyfcm_for(fcm_double).notify(fcm_token="tok-1", data_payload={"k": "v"}, dry_run=True)

    assert result == {"name": "projects/beacon-test/messages/fake_message_id"}
    (sent,) = fcm_double.received()
    assert sent["validate_only"] is True and sent["message"] == {"token": "tok-1", "data": {"k": "v"}}


def test_an_unregistered_token_raises_not_registered(fcm_double):
    with pytest.raises(FCMNotRegisteredError):
        pyfcm_for(fcm_double).notify(fcm_token="unregistered-x", notification_body="There")
    assert fcm_double.received()[0]["status"] == 404
    assert fcm_double.delivered() == []


def test_an_invalid_token_raises_invalid_data_with_fcms_body(fcm_double):
    with pytest.raises(InvalidDataError) as caught:
        pyfcm_for(fcm_double).notify(fcm_token="invalid-x", notification_body="There")

    error = json.loads(str(caught.value))["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0] == {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    }
    assert error["details"][1]["fieldViolations"][0]["field"] == "message.token"


def test_an_expired_token_makes_pyfcm_fetch_another(fcm_double):
    client = pyfcm_for(fcm_double)
    client.notify(fcm_token="tok-1", notification_body="one")
    fcm_double.expire_tokens()

    client.notify(fcm_token="tok-1", notification_body="two")

    assert fcm_double.tokens_issued == 2  # the 401 ACCESS_TOKEN_EXPIRED made pyfcm fetch another
    first, second = fcm_double.received()
    assert first["authorization"] != second["authorization"]
    assert second["status"] == 200


def test_scripted_answers_come_first(fcm_double):
    fcm_double.answer_next(UNAVAILABLE)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {fcm_double.issue_token()}"}
    body = {"message": {"token": "tok-1", "data": {"k": "v"}}}

    first = session.post(fcm_double.send_url, json=body, headers=headers)
    second = session.post(fcm_double.send_url, json=body, headers=headers)

    assert first.status_code == 503
    assert first.json()["error"]["details"][0]["errorCode"] == "UNAVAILABLE"
    assert second.status_code == 200


def test_a_quota_token_is_answered_429_with_retry_after(fcm_double):
    token = fcm_double.issue_token()

    response = requests.post(
        fcm_double.send_url,
        json={"message": {"token": "quota-x", "notification": {"body": "x"}}},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "30"
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["errorCode"] == "QUOTA_EXCEEDED"


def test_a_send_without_a_bearer_token_is_401(fcm_double):
    response = requests.post(fcm_double.send_url, json={"message": {"token": "tok-1"}})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["status"] == "UNAUTHENTICATED"
    assert error["details"][0]["reason"] == "CREDENTIALS_MISSING"
    assert fcm_double.received() == []


def test_pyfcm_without_a_valid_token_raises_authentication_error(fcm_double):
    client = pyfcm_for(fcm_double)
    client.requests_session.headers["Authorization"] = "Bearer ya29.forged"  # after the client's own token

    with pytest.raises(AuthenticationError):
        client.notify(fcm_token="tok-1", notification_body="x")


def test_bad_messages_are_invalid_argument(fcm_double):
    headers = {"Authorization": f"Bearer {fcm_double.issue_token()}"}
    post = lambda body: requests.post(fcm_double.send_url, json=body, headers=headers)  # noqa: E731

    no_target = post({"message": {"notification": {"body": "x"}}})
    two_targets = post({"message": {"token": "t", "topic": "news"}})
    too_big = post({"message": {"token": "t", "data": {"blob": "x" * 4100}}})
    other_project = requests.post(
        fcm_double.send_url.replace("beacon-test", "other"), json={"message": {"token": "t"}}, headers=headers
    )

    assert [r.status_code for r in (no_target, two_targets, too_big)] == [400, 400, 400]
    assert {r.json()["error"]["status"] for r in (no_target, two_targets, too_big)} == {"INVALID_ARGUMENT"}
    assert too_big.json()["error"]["details"][1]["fieldViolations"][0]["description"] == "Message is too big"
    assert other_project.status_code == 404
    assert other_project.json()["error"]["status"] == "NOT_FOUND"


def test_sends_over_one_session_use_one_connection(fcm_double):
    client = pyfcm_for(fcm_double)
    client.notify(fcm_token="tok-1", notification_body="first")  # opens the token and the send connections
    opened = fcm_double.connections

    for n in range(3):
        client.notify(fcm_token=f"tok-{n}", notification_body="again")

    assert fcm_double.connections == opened
    fcm_double.reset()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {fcm_double.issue_token()}"}
    for n in range(3):
        session.post(fcm_double.send_url, json={"message": {"token": f"tok-{n}"}}, headers=headers)
    assert fcm_double.connections == 1
    assert fcm_double.sent_count() == 3


# --- Web Push through pywebpush ---------------------------------------------------------


def test_webpush_delivers_an_encrypted_payload(push_double):
    subscription = push_double.subscribe()
    payload = {"title": "Hi", "body": "There", "data": {"id": 7}}

    response = webpush(
        subscription_info=subscription,
        data=json.dumps(payload),
        vapid_private_key=webpush_settings(push_double)["VAPID_PRIVATE_KEY"],
        vapid_claims={"sub": "mailto:ops@beacon.test"},
        ttl=60,
    )

    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{push_double.base_url}/m/")
    (pushed,) = push_double.received(subscription["endpoint"])
    assert pushed["payload"] == payload
    assert pushed["headers"] == {"ttl": "60", "content-encoding": "aes128gcm"}
    assert pushed["vapid_claims"]["aud"] == push_double.base_url
    assert pushed["vapid_claims"]["sub"] == "mailto:ops@beacon.test"
    assert pushed["vapid_key"] == push_double.vapid_public_key


def test_the_pem_key_works_through_py_vapid(push_double):
    subscription = push_double.subscribe()

    webpush(
        subscription_info=subscription,
        data="plain text",
        vapid_private_key=Vapid.from_pem(push_double.vapid_private_key_pem.encode()),
        vapid_claims={"sub": "https://beacon.test"},
        headers={"Urgency": "high", "Topic": "news"},
    )

    (pushed,) = push_double.received()
    assert pushed["payload"] == "plain text"
    assert pushed["headers"]["urgency"] == "high" and pushed["headers"]["topic"] == "news"


def test_a_gone_subscription_raises_with_410(push_double):
    subscription = push_double.subscribe(answer=(410, {}, None))

    with pytest.raises(WebPushException) as caught:
        webpush(
            subscription_info=subscription,
            data="{}",
            vapid_private_key=push_double.vapid_private_key,
            vapid_claims={"sub": "mailto:ops@beacon.test"},
        )

    assert caught.value.response.status_code == 410


def test_scripted_and_rate_limited_answers(push_double):
    subscription = push_double.subscribe()
    push_double.answer_next((429, {"Retry-After": "20"}, None))
    push = lambda: webpush(  # noqa: E731
        subscription_info=subscription,
        data="{}",
        vapid_private_key=push_double.vapid_private_key,
        vapid_claims={"sub": "mailto:ops@beacon.test"},
    )

    with pytest.raises(WebPushException) as caught:
        push()
    assert caught.value.status_code == 429 and caught.value.retry_after == "20"
    assert push().status_code == 201
    push_double.unsubscribe(subscription)
    with pytest.raises(WebPushException) as caught:
        push()
    assert caught.value.status_code == 410


def test_a_tampered_vapid_signature_is_refused(push_double):
    subscription = push_double.subscribe()
    session = requests.Session()
    original = session.post

    def tamper(url, **kwargs):
        scheme, params = kwargs["headers"]["authorization"].split(" ", 1)
        token, key = params.split(",", 1)
        header, claims, signature = token.removeprefix("t=").split(".")
        forged = json.loads(base64.urlsafe_b64decode(claims + "==="))
        forged["sub"] = "mailto:attacker@evil.test"
        claims = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        kwargs["headers"]["authorization"] = f"{scheme} t={header}.{claims}.{signature},{key}"
        return original(url, **kwargs)

    session.post = tamper

    with pytest.raises(WebPushException) as caught:
        webpush(
            subscription_info=subscription,
            data="{}",
            vapid_private_key=push_double.vapid_private_key,
            vapid_claims={"sub": "mailto:ops@beacon.test"},
            requests_session=session,
        )

    assert caught.value.response.status_code == 403
    assert caught.value.response.text == "invalid vapid"
    assert push_double.received() == []


def test_pushes_without_vapid_or_with_a_stale_one_are_refused(push_double):
    subscription = push_double.subscribe()

    with pytest.raises(WebPushException) as missing:
        webpush(subscription_info=subscription, data="{}")
    with pytest.raises(WebPushException) as wrong_audience:
        webpush(
            subscription_info=subscription,
            data="{}",
            vapid_private_key=push_double.vapid_private_key,
            vapid_claims={
                "sub": "mailto:ops@beacon.test",
                "aud": "https://elsewhere.test",
                "exp": int(time.time()) + 60,
            },
        )

    assert missing.value.response.status_code == 401
    assert wrong_audience.value.response.status_code == 403


def test_unknown_subscriptions_and_big_bodies(push_double):
    subscription = push_double.subscribe()
    unknown = {**subscription, "endpoint": f"{push_double.base_url}/push/nobody"}
    vapid = {"vapid_private_key": push_double.vapid_private_key}

    with pytest.raises(WebPushException) as not_found:
        webpush(subscription_info=unknown, data="{}", vapid_claims={"sub": "mailto:ops@beacon.test"}, **vapid)
    with pytest.raises(WebPushException) as too_big:
        webpush(
            subscription_info=subscription, data="x" * 4100, vapid_claims={"sub": "mailto:ops@beacon.test"}, **vapid
        )

    assert not_found.value.response.status_code == 404
    assert too_big.value.response.status_code == 413


def test_the_settings_hold_a_key_webpush_takes(push_double):
    settings = webpush_settings(push_double)

    assert settings == {
        "VAPID_PRIVATE_KEY": push_double.vapid_private_key,
        "VAPID_SUBJECT": "mailto:ops@beacon.test",
        "BEACON_ALLOW_PRIVATE_TARGETS": True,
    }
    assert "\n" not in settings["VAPID_PRIVATE_KEY"] and "=" not in settings["VAPID_PRIVATE_KEY"]
