from django.urls import include, path
from rest_framework.routers import DefaultRouter

from templates.api import TemplateViewSet

from .api import (
    BatchSendView,
    DeliveryLogViewSet,
    HealthView,
    ResendView,
    SendView,
    TemplateTestView,
    TwilioStatusCallbackView,
)

router = DefaultRouter()
router.register("templates", TemplateViewSet, basename="template")
router.register("logs", DeliveryLogViewSet, basename="log")

urlpatterns = [
    path("send/", SendView.as_view(), name="send"),
    path("send/batch/", BatchSendView.as_view(), name="send-batch"),
    path("health/", HealthView.as_view(), name="health"),
    path("sms-status-callback/", TwilioStatusCallbackView.as_view(), name="sms-status-callback"),
    path("templates/<uuid:pk>/test/", TemplateTestView.as_view(), name="template-test"),
    path("<uuid:pk>/resend/", ResendView.as_view(), name="resend"),
    path("", include(router.urls)),
]
