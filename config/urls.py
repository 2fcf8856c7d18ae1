from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from notifications.api import esp_webhook_urlpatterns
from notifications.unsubscribe import UnsubscribeView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/notifications/", include("notifications.urls")),
    path("api/v1/preferences/", include("notifications.urls_preferences")),
    path("api/v1/recipients/", include("notifications.urls_recipients")),
    path("api/v1/inbox/", include("notifications.urls_inbox")),
    path("api/v1/webhooks/", include("notifications.urls_webhooks")),
    path("api/v1/providers/", include("providers.urls")),
    path("api/v1/campaigns/", include("campaigns.urls")),
    # django-anymail's ESP tracking webhooks: /anymail/<esp>/tracking/
    path("anymail/", include((esp_webhook_urlpatterns(), "anymail"))),
    path("u/<str:token>/", UnsubscribeView.as_view(), name="unsubscribe"),
]

handler400 = "accounts.errors.bad_request"
handler404 = "accounts.errors.not_found"
handler500 = "accounts.errors.server_error"
