"""/api/v1/webhooks/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .webhooks_api import WebhookEndpointViewSet, WebhookMessageListView, WebhookMessageView

router = SimpleRouter()
router.register("", WebhookEndpointViewSet, basename="webhook")

urlpatterns = [
    path("<int:endpoint_id>/messages/", WebhookMessageListView.as_view(), name="webhook-messages"),
    path("<int:endpoint_id>/messages/<uuid:message_id>/", WebhookMessageView.as_view(), name="webhook-message"),
    *router.urls,
]
