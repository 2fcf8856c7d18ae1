"""/api/v1/preferences/: a recipient's preferences and consent, by the account's external id."""

from django.urls import path

from .recipients_api import RecipientConsentView, RecipientPreferencesView, RecipientUnsubscribeView

urlpatterns = [
    path("<str:external_id>/", RecipientPreferencesView.as_view(), name="recipient-preferences"),
    path("<str:external_id>/unsubscribe/", RecipientUnsubscribeView.as_view(), name="recipient-unsubscribe"),
    path("<str:external_id>/consent/", RecipientConsentView.as_view(), name="recipient-consent"),
]
