import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from campaigns.audiences import audience_create


def csv_upload(content: str | bytes, name: str = "audience.csv") -> SimpleUploadedFile:
    """An uploaded CSV as the API and the admin receive it (text is encoded as UTF-8)."""
    data = content.encode() if isinstance(content, str) else content
    return SimpleUploadedFile(name, data, content_type="text/csv")


@pytest.fixture
def alice_list(alice):
    """Alice's list audience, empty."""
    return audience_create(alice, name="Customers")


@pytest.fixture
def bob_list(bob):
    return audience_create(bob, name="Customers")


@pytest.fixture
def alice_staff(alice):
    """Alice's own operator: staff with every permission on campaigns, not a superuser."""
    alice.is_staff = True
    alice.save()
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label="campaigns"))
    client = Client()
    client.force_login(alice)
    return client
