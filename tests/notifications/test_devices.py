"""The device registry: /api/v1/recipients/{external_id}/devices/, idempotent per token,
deactivated on a provider's say-so, pruned when long inactive, erased with its recipient."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from notifications.models import Device, Recipient
from notifications.services.devices import devices_deactivate

pytestmark = pytest.mark.django_db

TOKEN = "fcm-token-" + "x" * 150
WEB = {
    "platform": "web",
    "token": "https://fcm.googleapis.com/fcm/send/abc123",
    "subscription": {"p256dh": "BNc...key", "auth": "tBHI...auth"},
}


def url(external_id="user-1", suffix=""):
    return f"/api/v1/recipients/{external_id}/devices/{suffix}"


def test_registering_is_idempotent_per_token_and_creates_the_recipient(alice, alice_api):
    first = alice_api.post(url(), {"platform": "android", "token": TOKEN}, format="json")
    assert first.status_code == 201, first.json()
    assert Recipient.objects.get(account=alice, external_id="user-1")
    again = alice_api.post(url(), {"platform": "android", "token": TOKEN}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Device.objects.count() == 1
    listed = alice_api.get(url()).json()
    assert [(d["platform"], d["token"], d["active"]) for d in listed] == [("android", TOKEN, True)]


def test_a_token_registered_again_is_reactivated_and_moves_to_the_new_recipient(alice, alice_api):
    alice_api.post(url("user-1"), {"platform": "ios", "token": TOKEN}, format="json")
    devices_deactivate(account_id=alice.pk, tokens=[TOKEN], reason="UNREGISTERED")
    assert Device.objects.get().active is False
    alice_api.post(url("user-2"), {"platform": "ios", "token": TOKEN}, format="json")
    device = Device.objects.get()
    assert (device.active, device.recipient.external_id, device.deactivation_reason) == (True, "user-2", "")
    assert alice_api.get(url("user-1")).json() == []


def test_web_push_needs_an_https_endpoint_and_its_keys(alice_api):
    assert alice_api.post(url(), WEB, format="json").status_code == 201
    bad = alice_api.post(url(), {**WEB, "token": "http://example.com/x"}, format="json")
    assert bad.status_code == 400 and "token" in bad.json()["errors"]
    missing = alice_api.post(url(), {**WEB, "subscription": {"p256dh": "k"}}, format="json")
    assert missing.status_code == 400
    assert missing.json()["errors"]["subscription"] == ["Web Push needs auth."]


def test_bad_platform_is_a_400_naming_the_field(alice_api):
    response = alice_api.post(url(), {"platform": "symbian", "token": TOKEN}, format="json")
    assert response.status_code == 400 and "platform" in response.json()["errors"]


def test_devices_are_the_accounts_own(alice_api, bob_api):
    created = alice_api.post(url(), {"platform": "android", "token": TOKEN}, format="json").json()
    assert bob_api.get(url()).status_code == 404
    assert bob_api.delete(url(suffix=f"{created['id']}/")).status_code == 404
    # the same token registered by another account is that account's own device
    assert bob_api.post(url(), {"platform": "android", "token": TOKEN}, format="json").status_code == 201
    assert Device.objects.count() == 2
    assert alice_api.delete(url(suffix=f"{created['id']}/")).status_code == 204
    assert Device.objects.count() == 1


def test_prune_devices_removes_long_inactive_ones(alice, alice_api):
    alice_api.post(url(), {"platform": "android", "token": "old"}, format="json")
    alice_api.post(url(), {"platform": "android", "token": "gone"}, format="json")
    alice_api.post(url(), {"platform": "android", "token": "fresh"}, format="json")
    long_ago = timezone.now() - timedelta(days=400)
    Device.objects.filter(token="old").update(last_seen_at=long_ago)
    Device.objects.filter(token="gone").update(active=False, deactivated_at=long_ago)
    out = StringIO()
    call_command("prune_devices", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "Would delete 2 device(s) inactive for 270 days or more."
    assert Device.objects.count() == 3
    out = StringIO()
    call_command("prune_devices", stdout=out)
    assert out.getvalue().startswith("Deleted 2 device(s)")
    assert list(Device.objects.values_list("token", flat=True)) == ["fresh"]


def test_erasing_the_recipient_removes_its_devices_and_the_export_lists_them(alice, alice_api):
    alice_api.post(url(), {"platform": "android", "token": TOKEN}, format="json")
    exported = alice_api.get("/api/v1/recipients/user-1/export/").json()
    assert [d["token"] for d in exported["devices"]] == [TOKEN]
    assert alice_api.delete("/api/v1/recipients/user-1/").status_code == 204
    assert Device.objects.count() == 0


def test_the_admin_lists_devices_of_the_operators_account_only(alice, bob, client):
    from notifications.services.devices import device_register

    ana = Recipient.objects.create(account=alice, external_id="ana")
    ben = Recipient.objects.create(account=bob, external_id="ben")
    device_register(account=alice, external_id=ana.external_id, token="alice-token-1234567890", platform="android")
    device_register(account=bob, external_id=ben.external_id, token="bob-token-0987654321", platform="ios")
    alice.is_staff = True
    alice.save()
    from django.contrib.auth.models import Permission

    alice.user_permissions.add(Permission.objects.get(codename="view_device"))
    client.force_login(alice)
    page = client.get("/admin/notifications/device/")
    assert page.status_code == 200
    assert "…token-1234567890"[-12:] in page.content.decode()
    assert "0987654321" not in page.content.decode()
