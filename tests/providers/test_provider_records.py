"""An account's provider records: the API, their encryption at rest and key rotation, the
outbound URL guard on their settings, a test send through one, and the admin."""

import json
import logging

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from providers.models import ProviderConfig
from providers.services import (
    credentials_masked,
    credentials_of,
    provider_config_create,
    provider_config_test,
    provider_config_update,
    provider_keys_rotate,
)
from tests.conftest import TWILIO_FROM, TWILIO_SID, TWILIO_TOKEN

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"
TO = "+14155550123"
SENDGRID_KEY = "SG.secret-sendgrid-key-1234"


def detail(config_id) -> str:
    return f"{PROVIDERS}{config_id}/"


def twilio_body(**overrides) -> dict:
    body = {
        "name": "Twilio main",
        "channel": "sms",
        "kind": "twilio",
        "priority": 10,
        "credentials": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
        "settings": {"from_number": TWILIO_FROM},
    }
    body.update(overrides)
    return body


def create(api, **overrides) -> dict:
    response = api.post(PROVIDERS, twilio_body(**overrides), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def everything_shown(response) -> str:
    return response.content.decode()


@pytest.fixture
def no_private(settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False


@pytest.fixture
def private_ok(settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True


# --- The API ------------------------------------------------------------------------------


def test_create_reads_back_masked_and_lists_by_channel_and_priority(alice_api):
    # when
    created = create(alice_api, rate_limit_per_second=5, burst=10, cost_per_message="0.0079", currency="USD")
    # then
    assert created == {
        "id": created["id"],
        "name": "Twilio main",
        "channel": "sms",
        "kind": "twilio",
        "priority": 10,
        "enabled": True,
        "credentials": {"account_sid": "••••0000", "auth_token": "••••oken"},
        "settings": {"from_number": TWILIO_FROM},
        "rate_limit_per_second": 5.0,
        "burst": 10,
        "cost_per_message": "0.007900",
        "currency": "USD",
        "health": {**created["health"], "status": "healthy", "attempts": 0},
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }
    assert alice_api.get(detail(created["id"])).json() == created
    # more records: listed by channel, then priority
    backup = create(alice_api, name="Twilio backup", priority=20)
    console = create(alice_api, name="Log", channel="email", kind="console", priority=500, credentials={}, settings={})
    first = create(alice_api, name="First", channel="sms", kind="console", priority=1, credentials={}, settings={})
    listed = alice_api.get(PROVIDERS).json()
    assert listed["count"] == 4
    assert [r["id"] for r in listed["results"]] == [console["id"], first["id"], created["id"], backup["id"]]
    # filters
    assert [r["id"] for r in alice_api.get(PROVIDERS, {"channel": "email"}).json()["results"]] == [console["id"]]
    assert [r["id"] for r in alice_api.get(PROVIDERS, {"kind": "twilio"}).json()["results"]] == [
        created["id"],
        backup["id"],
    ]
    alice_api.put(f"{detail(backup['id'])}status/", {"enabled": False}, format="json")
    assert [r["id"] for r in alice_api.get(PROVIDERS, {"enabled": "false"}).json()["results"]] == [backup["id"]]
    assert alice_api.get(PROVIDERS, {"channel": "fax"}).status_code == 400


def test_patch_merges_credentials_key_by_key_and_put_replaces_the_rest(alice, alice_api):
    created = create(alice_api)
    url = detail(created["id"])
    # a new token only: the SID stays
    response = alice_api.patch(url, {"credentials": {"auth_token": "a-brand-new-auth-token"}}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["credentials"] == {"account_sid": "••••0000", "auth_token": "••••oken"}
    config = ProviderConfig.objects.get()
    assert credentials_of(config) == {"account_sid": TWILIO_SID, "auth_token": "a-brand-new-auth-token"}
    # PUT: settings replaced as a whole, credentials still merged
    response = alice_api.put(
        url,
        {
            "name": "Twilio renamed",
            "channel": "whatsapp",
            "kind": "twilio",
            "priority": 7,
            "settings": {"whatsapp_from": "whatsapp:+14155238886"},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["name"], body["channel"], body["priority"], body["settings"]) == (
        "Twilio renamed",
        "whatsapp",
        7,
        {"whatsapp_from": "whatsapp:+14155238886"},
    )
    assert set(body["credentials"]) == {"account_sid", "auth_token"}
    # a required credential cannot be removed
    response = alice_api.patch(url, {"credentials": {"auth_token": None}}, format="json")
    assert (response.status_code, list(response.json()["errors"])) == (400, ["credentials"])
    # to another kind: the previous kind's secrets do not carry over
    response = alice_api.patch(url, {"kind": "console", "settings": {}}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["credentials"] == {}
    # delete
    assert alice_api.delete(url).status_code == 204
    assert alice_api.get(url).status_code == 404
    assert not alice.provider_configs.exists()


def test_an_optional_credential_given_empty_is_removed(alice):
    config = provider_config_create(
        alice, name="Mail", channel="email", kind="smtp", credentials={"username": "ana", "password": "pw-123456789"}
    )
    provider_config_update(config, credentials={"password": "", "username": None})
    assert credentials_of(ProviderConfig.objects.get()) == {}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "sendgrid"}, "kind"),  # not a kind of sms
        ({"kind": "fax"}, "kind"),
        ({"channel": "fax"}, "channel"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"credentials": {"account_sid": TWILIO_SID}}, "credentials"),  # auth_token missing
        ({"credentials": {"account_sid": TWILIO_SID, "auth_token": "t" * 20, "api_key": "k" * 20}}, "credentials"),
        ({"settings": {"from_number": TWILIO_FROM, "colour": "blue"}}, "settings"),
        ({"settings": {"from_number": {"nested": True}}}, "settings"),
        ({"priority": 1001}, "priority"),
        ({"priority": -1}, "priority"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"rate_limit_per_second": -2}, "rate_limit_per_second"),
        ({"burst": 0}, "burst"),
        ({"cost_per_message": "0.01"}, "currency"),  # a cost needs its currency
        ({"cost_per_message": "0.01", "currency": "usd"}, "currency"),
        ({"cost_per_message": "0.0000001", "currency": "USD"}, "cost_per_message"),
    ],
)
def test_bad_input_names_the_field(alice_api, overrides, field):
    response = alice_api.post(PROVIDERS, twilio_body(**overrides), format="json")
    assert response.status_code == 400, overrides
    assert list(response.json()["errors"]) == [field], (overrides, response.json())
    assert TWILIO_TOKEN not in everything_shown(response)
    assert ProviderConfig.objects.count() == 0


def test_an_error_names_a_credential_never_its_value(alice_api):
    secret = "not-a-twilio-credential-at-all"
    response = alice_api.post(
        PROVIDERS, twilio_body(credentials={"account_sid": TWILIO_SID, "auth_token": "t" * 20, "apikey": secret})
    )
    assert response.status_code == 400
    assert "apikey" in response.json()["errors"]["credentials"][0]
    assert secret not in everything_shown(response)


def test_names_are_unique_per_account(alice_api, bob_api):
    create(alice_api)
    again = alice_api.post(PROVIDERS, twilio_body(), format="json")
    assert (again.status_code, list(again.json()["errors"])) == (400, ["name"])
    create(bob_api)  # another account may use the name
    other = create(alice_api, name="Twilio two")
    renamed = alice_api.patch(detail(other["id"]), {"name": "Twilio main"}, format="json")
    assert (renamed.status_code, list(renamed.json()["errors"])) == (400, ["name"])


def test_put_status_toggles(alice_api):
    created = create(alice_api)
    url = f"{detail(created['id'])}status/"
    off = alice_api.put(url, {"enabled": False}, format="json")
    assert (off.status_code, off.json()["enabled"]) == (200, False)
    assert ProviderConfig.objects.get().enabled is False
    on = alice_api.put(url, {"enabled": True}, format="json")
    assert (on.status_code, on.json()["enabled"]) == (200, True)
    assert ProviderConfig.objects.get().enabled is True
    assert alice_api.put(url, {}, format="json").status_code == 400


def test_another_accounts_record_is_not_found_whatever_is_asked(alice_api, bob_api):
    created = create(alice_api)
    url = detail(created["id"])
    assert bob_api.get(PROVIDERS).json()["count"] == 0
    assert bob_api.get(url).status_code == 404
    assert bob_api.patch(url, {"priority": 1}, format="json").status_code == 404
    assert bob_api.put(url, twilio_body(), format="json").status_code == 404
    assert bob_api.put(f"{url}status/", {"enabled": False}, format="json").status_code == 404
    assert bob_api.post(f"{url}test/", {"to": TO}, format="json").status_code == 404
    assert bob_api.delete(url).status_code == 404
    stored = ProviderConfig.objects.get()
    assert (stored.enabled, stored.priority) == (True, 10)


def test_anonymous_requests_are_refused(anon_api):
    assert anon_api.get(PROVIDERS).status_code == 401


# --- Secrets at rest ----------------------------------------------------------------------


def test_the_column_holds_ciphertext_and_no_answer_shows_more_than_4_characters(alice_api):
    created = create(alice_api)
    create(alice_api, name="Mail", channel="email", kind="sendgrid", credentials={"api_key": SENDGRID_KEY}, settings={})
    (stored,) = ProviderConfig.objects.filter(kind="twilio").values_list("credentials", flat=True)
    columns = " ".join(ProviderConfig.objects.values_list("credentials", flat=True))
    for secret in (TWILIO_SID, TWILIO_TOKEN, SENDGRID_KEY, "auth_token", "api_key"):
        assert secret not in columns
    assert stored.startswith("gAAAAA")  # a Fernet token
    answers = [alice_api.get(PROVIDERS), alice_api.get(detail(created["id"]))]
    for response in answers:
        text = everything_shown(response)
        for secret in (TWILIO_SID, TWILIO_TOKEN, SENDGRID_KEY):
            assert secret[:-4] not in text  # at most the last 4 characters
    assert alice_api.get(PROVIDERS, {"kind": "sendgrid"}).json()["results"][0]["credentials"] == {"api_key": "••••1234"}


def test_short_credentials_are_masked_whole(alice):
    config = provider_config_create(
        alice, name="Mail", channel="email", kind="smtp", credentials={"username": "ana", "password": "hunter2"}
    )
    assert credentials_masked(config) == {"username": "••••", "password": "••••"}


def test_rotation_reencrypts_under_the_first_key(alice, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.BEACON_ENCRYPTION_KEYS = [old]
    config = provider_config_create(alice, **{**twilio_body(), "credentials": dict(twilio_body()["credentials"])})
    before = ProviderConfig.objects.get().credentials
    # a new key listed first: the record still reads (with the old key)
    settings.BEACON_ENCRYPTION_KEYS = [new, old]
    assert credentials_of(ProviderConfig.objects.get()) == {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}
    # a dry run writes nothing
    out = _run("rotate_provider_keys", "--dry-run")
    assert out == "Would re-encrypt 1 provider record(s); 1 of them not yet under the first key.\n"
    assert ProviderConfig.objects.get().credentials == before
    # when
    out = _run("rotate_provider_keys")
    # then
    assert out == "Re-encrypted 1 provider record(s) under the first key.\n"
    after = ProviderConfig.objects.get(pk=config.pk).credentials
    assert after != before
    assert json.loads(Fernet(new.encode()).decrypt(after.encode())) == {
        "account_sid": TWILIO_SID,
        "auth_token": TWILIO_TOKEN,
    }
    settings.BEACON_ENCRYPTION_KEYS = [new]
    assert credentials_of(ProviderConfig.objects.get())["auth_token"] == TWILIO_TOKEN
    assert provider_keys_rotate() == 1


def test_a_key_no_longer_listed_is_improperly_configured(alice, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.BEACON_ENCRYPTION_KEYS = [old]
    provider_config_create(alice, **twilio_body())
    settings.BEACON_ENCRYPTION_KEYS = [new]
    with pytest.raises(ImproperlyConfigured, match="BEACON_ENCRYPTION_KEYS lacks"):
        credentials_of(ProviderConfig.objects.get())
    with pytest.raises(ImproperlyConfigured, match="BEACON_ENCRYPTION_KEYS lacks"):
        provider_keys_rotate()
    with pytest.raises(CommandError, match="nothing was re-encrypted"):
        _run("rotate_provider_keys")
    settings.BEACON_ENCRYPTION_KEYS = [old]
    assert credentials_of(ProviderConfig.objects.get())["auth_token"] == TWILIO_TOKEN


def _run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- The outbound URL guard ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://169.254.169.254/", "http://[::1]/", "file:///etc/passwd"])
def test_a_private_api_base_url_is_refused(alice_api, no_private, url):
    response = alice_api.post(
        PROVIDERS, twilio_body(settings={"from_number": TWILIO_FROM, "api_base_url": url}), format="json"
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["settings.api_base_url"], response.json()
    assert ProviderConfig.objects.count() == 0
    # and on a change
    created = create(alice_api)
    response = alice_api.patch(detail(created["id"]), {"settings": {"api_base_url": url}}, format="json")
    assert (response.status_code, list(response.json()["errors"])) == (400, ["settings.api_base_url"])


def test_private_targets_allowed_lift_the_address_part(alice_api, private_ok):
    created = create(alice_api, settings={"from_number": TWILIO_FROM, "api_base_url": "http://127.0.0.1:9/"})
    assert created["settings"]["api_base_url"] == "http://127.0.0.1:9/"
    response = alice_api.post(
        PROVIDERS,
        twilio_body(name="Other", settings={"api_base_url": "ftp://127.0.0.1/"}),
        format="json",
    )
    assert list(response.json()["errors"]) == ["settings.api_base_url"]


# --- A test send --------------------------------------------------------------------------


@pytest.fixture
def double(twilio_server):
    """The Twilio double, emptied; the platform's settings do not point at it: only a record can."""
    twilio_server.reset()
    return twilio_server


def double_record(api, double, **credentials) -> dict:
    return create(
        api,
        credentials={"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN, **credentials},
        settings={"from_number": TWILIO_FROM, "api_base_url": double.base_url},
    )


def test_a_test_send_goes_through_the_record_once(alice_api, double, private_ok, caplog):
    caplog.set_level(logging.DEBUG)
    created = double_record(alice_api, double)
    # when
    response = alice_api.post(f"{detail(created['id'])}test/", {"to": TO, "message": "Hello from Beacon"})
    # then
    assert response.status_code == 200, response.json()
    result = response.json()
    assert result["ok"] is True
    assert result["provider_message_id"].startswith("SM")
    assert (result["error"], result["code"], result["retryable"]) == ("", "", False)
    assert double.requests == [{"To": TO, "From": TWILIO_FROM, "Body": "Hello from Beacon"}]
    assert TWILIO_TOKEN not in caplog.text


def test_a_test_send_with_wrong_credentials_is_ok_false(alice_api, double, private_ok, caplog):
    caplog.set_level(logging.DEBUG)
    created = double_record(alice_api, double, auth_token="the-wrong-auth-token")
    response = alice_api.post(f"{detail(created['id'])}test/", {"to": TO}, format="json")
    assert response.status_code == 200
    result = response.json()
    assert result == {
        "ok": False,
        "provider_message_id": "",
        "error": "Configuration error: Twilio answered HTTP 401, error 20003",
        "code": "20003",
        "retryable": False,
    }
    assert "the-wrong-auth-token" not in everything_shown(response)
    assert "the-wrong-auth-token" not in caplog.text
    assert double.sent_count() == 0


def test_a_test_send_to_a_refused_url_answers_ok_false(alice, alice_api, double, settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    created = double_record(alice_api, double)
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False  # the server is refused at send time too
    response = alice_api.post(f"{detail(created['id'])}test/", {"to": TO}, format="json")
    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert response.json()["error"].startswith("Configuration error: api_base_url is refused")
    assert double.sent_count() == 0


def test_a_test_send_checks_the_address_for_the_channel(alice_api, double, private_ok):
    sms = double_record(alice_api, double)
    email = create(alice_api, name="Log", channel="email", kind="console", credentials={}, settings={})
    for config, to in ((sms, "not-a-number"), (sms, "4155550123"), (email, "nobody"), (sms, "")):
        response = alice_api.post(f"{detail(config['id'])}test/", {"to": to}, format="json")
        assert (response.status_code, list(response.json()["errors"])) == (400, ["to"]), to
    assert double.sent_count() == 0
    # the console kind writes to the log: ok
    response = alice_api.post(f"{detail(email['id'])}test/", {"to": "ana@example.com"}, format="json")
    assert response.json()["ok"] is True
    assert response.json()["provider_message_id"].startswith("console-")


def test_the_service_sends_one_message_through_exactly_that_adapter(alice, double, private_ok):
    config = provider_config_create(
        alice,
        **twilio_body(settings={"from_number": TWILIO_FROM, "api_base_url": double.base_url}),
    )
    result = provider_config_test(config, TO)
    assert result["ok"] is True
    assert double.requests == [{"To": TO, "From": TWILIO_FROM, "Body": "Beacon test"}]


# --- The admin ----------------------------------------------------------------------------


def changelist() -> str:
    return reverse("admin:providers_providerconfig_changelist")


def change(pk) -> str:
    return reverse("admin:providers_providerconfig_change", args=[pk])


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def records(alice, bob):
    return {
        "alice": provider_config_create(alice, **twilio_body()),
        "bob": provider_config_create(
            bob, name="Mail", channel="email", kind="sendgrid", credentials={"api_key": SENDGRID_KEY}
        ),
    }


@pytest.fixture
def alice_staff(alice):
    alice.is_staff = True
    alice.save()
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label="providers"))
    client = Client()
    client.force_login(alice)
    return client


def test_admin_pages_load_and_hide_credentials(admin_client, records):
    response = admin_client.get(changelist())
    assert response.status_code == 200
    assert response.context["cl"].result_count == 2
    for config in records.values():
        page = admin_client.get(change(config.pk))
        assert page.status_code == 200
        text = page.content.decode()
        for secret in (TWILIO_SID, TWILIO_TOKEN, SENDGRID_KEY, config.credentials):
            assert secret[:-4] not in text  # at most the last 4 characters
    page = admin_client.get(change(records["alice"].pk))
    form = page.context["adminform"].form
    assert sorted(name for name in form.fields if name.startswith("credential_")) == [
        "credential_account_sid",
        "credential_auth_token",
    ]
    assert 'type="password"' in page.content.decode()
    assert "account_sid: ••••0000, auth_token: ••••oken" in page.content.decode()
    add = admin_client.get(reverse("admin:providers_providerconfig_add"))
    assert add.status_code == 200


def test_admin_blank_credentials_keep_and_typed_ones_replace(admin_client, records):
    config = records["alice"]
    form = {
        "name": config.name,
        "channel": "sms",
        "kind": "twilio",
        "priority": "5",
        "enabled": "on",
        "settings": json.dumps({"from_number": TWILIO_FROM}),
        "currency": "",
        "credential_account_sid": "",
        "credential_auth_token": "",
    }
    response = admin_client.post(change(config.pk), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    config.refresh_from_db()
    assert config.priority == 5
    assert credentials_of(config) == {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}
    response = admin_client.post(change(config.pk), {**form, "credential_auth_token": "a-new-token-from-admin"})
    assert response.status_code == 302
    config.refresh_from_db()
    assert credentials_of(config)["auth_token"] == "a-new-token-from-admin"
    # refused as the API refuses, naming the field
    response = admin_client.post(change(config.pk), {**form, "settings": json.dumps({"colour": "blue"})})
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["settings"]


def test_admin_adds_through_the_services(admin_client, alice):
    form = {
        "account": str(alice.pk),
        "name": "Mail",
        "channel": "email",
        "kind": "sendgrid",
        "priority": "100",
        "enabled": "on",
        "settings": "{}",
        "currency": "",
        "credential_api_key": SENDGRID_KEY,
    }
    response = admin_client.post(reverse("admin:providers_providerconfig_add"), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    config = ProviderConfig.objects.get()
    assert (config.account, config.kind) == (alice, "sendgrid")
    assert credentials_of(config) == {"api_key": SENDGRID_KEY}
    # a kind's required credential missing
    response = admin_client.post(
        reverse("admin:providers_providerconfig_add"), {**form, "name": "Other", "credential_api_key": ""}
    )
    assert response.status_code == 200
    assert "credentials: sendgrid needs: api_key." in response.context["adminform"].form.non_field_errors()


def test_admin_enable_and_disable_ask_first(admin_client, records):
    config = records["alice"]
    data = {"action": "disable", "_selected_action": [str(config.pk)]}
    response = admin_client.post(changelist(), data)
    assert response.status_code == 200
    assert "Are you sure you want to disable these providers?" in response.content.decode()
    assert ProviderConfig.objects.get(pk=config.pk).enabled is True
    response = admin_client.post(changelist(), {**data, "post": "yes"}, follow=True)
    assert messages_of(response) == [("success", "Disabled 1 provider.")]
    assert ProviderConfig.objects.get(pk=config.pk).enabled is False
    data = {"action": "enable", "_selected_action": [str(config.pk)], "post": "yes"}
    response = admin_client.post(changelist(), data, follow=True)
    assert messages_of(response) == [("success", "Enabled 1 provider.")]
    assert ProviderConfig.objects.get(pk=config.pk).enabled is True


def test_admin_staff_see_their_own_account_only(alice_staff, records):
    response = alice_staff.get(changelist())
    assert [obj.pk for obj in response.context["cl"].result_list] == [records["alice"].pk]
    assert alice_staff.get(change(records["alice"].pk)).status_code == 200
    response = alice_staff.get(change(records["bob"].pk))
    assert (response.status_code, response.url) == (302, "/admin/")
