"""/api/v1/inbox/."""

from django.urls import path

from .inbox_api import (
    InboxItemArchiveView,
    InboxItemReadView,
    InboxListView,
    InboxReadAllView,
    InboxStreamTokenView,
    InboxStreamView,
    InboxUnreadCountView,
)

urlpatterns = [
    path("", InboxListView.as_view(), name="inbox"),
    path("unread-count/", InboxUnreadCountView.as_view(), name="inbox-unread-count"),
    path("read-all/", InboxReadAllView.as_view(), name="inbox-read-all"),
    path("stream-token/", InboxStreamTokenView.as_view(), name="inbox-stream-token"),
    path("stream/", InboxStreamView.as_view(), name="inbox-stream"),
    path("<int:pk>/read/", InboxItemReadView.as_view(), name="inbox-item-read"),
    path("<int:pk>/archive/", InboxItemArchiveView.as_view(), name="inbox-item-archive"),
]
