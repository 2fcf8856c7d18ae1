import uuid

import django_filters
from django.db.models import Q

from accounts.inputs import IsoDateTimeFilter
from templates.models import Channel

from .models import Delivery, DeliveryStatus


class DeliveryLogFilter(django_filters.FilterSet):
    channel = django_filters.MultipleChoiceFilter(choices=Channel.choices)
    status = django_filters.MultipleChoiceFilter(choices=DeliveryStatus.choices)
    template = django_filters.CharFilter(method="filter_template", help_text="Template id or key.")
    recipient = django_filters.CharFilter(
        method="filter_recipient", help_text="Recipient email, phone, external id or address sent to."
    )
    notification = django_filters.UUIDFilter(field_name="notification_id")
    fallback = django_filters.BooleanFilter(
        field_name="notification__fallback", help_text="Deliveries of notifications that try their channels in order."
    )
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Delivery
        fields = [
            "channel",
            "status",
            "template",
            "recipient",
            "notification",
            "fallback",
            "created_after",
            "created_before",
        ]

    def filter_template(self, queryset, name, value):
        try:
            return queryset.filter(notification__template_id=uuid.UUID(value))
        except ValueError:
            return queryset.filter(notification__template__key=value)

    def filter_recipient(self, queryset, name, value):
        return queryset.filter(
            Q(to__iexact=value)
            | Q(notification__recipient__external_id=value)
            | Q(notification__recipient__email__iexact=value)
            | Q(notification__recipient__phone=value)
        )
