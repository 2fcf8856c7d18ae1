from django.urls import include, path
from rest_framework.routers import DefaultRouter

from preferences.api import AccountPreferenceView
from templates.api import TemplateViewSet

from .api import (
    BatchSendView,
    DeliveryLogViewSet,
    HealthView,
    ResendView,
    SendView,
    SmsInboundView,
    TemplateTestView,
    twilio_status_callback_view,
)
from .bookings_api import BookingEventsView, ScheduleViewSet
from .stats_api import DeliveryStatsView

router = DefaultRouter()
router.register("templates", TemplateViewSet, basename="template")
router.register("logs", DeliveryLogViewSet, basename="log")
router.register("scheduled", ScheduleViewSet, basename="scheduled")

urlpatterns = [
    path("send/", SendView.as_view(), name="send"),
    path("send/batch/", BatchSendView.as_view(), name="send-batch"),
    path("health/", HealthView.as_view(), name="health"),
    path("preferences/", AccountPreferenceView.as_view(), name="preferences"),
    path("events/", BookingEventsView.as_view(), name="booking-events"),
    path("sms-status-callback/", twilio_status_callback_view("sms"), name="sms-status-callback"),
    path("whatsapp-status-callback/", twilio_status_callback_view("whatsapp"), name="whatsapp-status-callback"),
    path("voice-status-callback/", twilio_status_callback_view("voice"), name="voice-status-callback"),
    path("sms-inbound/", SmsInboundView.as_view(), name="sms-inbound"),
    path("templates/<uuid:pk>/test/", TemplateTestView.as_view(), name="template-test"),
    path("<uuid:pk>/resend/", ResendView.as_view(), name="resend"),
    path("stats/", DeliveryStatsView.as_view(), name="stats"),
    path("", include(router.urls)),
]
