"""/api/v1/recipients/: a recipient's data, by the account's external id for them."""

from django.urls import path

from .devices_api import DeviceListView, DeviceView
from .rights_api import RecipientExportView, RecipientView

urlpatterns = [
    path("<str:external_id>/", RecipientView.as_view(), name="recipient"),
    path("<str:external_id>/export/", RecipientExportView.as_view(), name="recipient-export"),
    path("<str:external_id>/devices/", DeviceListView.as_view(), name="recipient-devices"),
    path("<str:external_id>/devices/<int:pk>/", DeviceView.as_view(), name="recipient-device"),
]
