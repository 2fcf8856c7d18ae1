"""Providers as data: an account's own providers, several per channel, tried in priority
order (lower first).

A record names its channel and its kind (one of the channel's kinds, `CHANNELS[channel]
.kinds`) and carries the kind's configuration by the names of `KIND_FIELDS[kind]`: the
secrets (`credentials`) as Fernet ciphertext of a JSON object (config.encryption, several
keys for rotation), never stored or shown in the clear; the rest (`settings`) as given.

Records are written through providers.services, which validates them.
"""

from django.conf import settings as django_settings
from django.db import models

from .channels import CHANNELS

CHANNEL_CHOICES = [(spec.name, spec.label) for spec in CHANNELS.values()]

DEFAULT_PRIORITY = 100
MAX_PRIORITY = 1000


class ProviderConfig(models.Model):
    account = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_configs"
    )
    name = models.CharField(max_length=100)
    channel = models.CharField(max_length=16, choices=CHANNEL_CHOICES)
    # One of the channel's kinds and a key of providers.kinds.KIND_FIELDS (checked by the
    # services, not by choices here: kinds come and go without a migration).
    kind = models.CharField(max_length=32)
    priority = models.PositiveSmallIntegerField(default=DEFAULT_PRIORITY, help_text="Lower goes first.")
    enabled = models.BooleanField(default=True)
    # Fernet ciphertext of a JSON object: the kind's secrets. Never shown in the clear.
    credentials = models.TextField(blank=True, default="")
    # The kind's non-secret settings, shown as given.
    settings = models.JSONField(default=dict, blank=True)
    rate_limit_per_second = models.FloatField(null=True, blank=True)
    burst = models.PositiveIntegerField(null=True, blank=True)
    cost_per_message = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "name"], name="provider_config_name_unique")]
        indexes = [
            models.Index(fields=["account", "channel", "enabled", "priority"], name="provider_config_chain_idx"),
        ]
        verbose_name = "provider"

    def __str__(self) -> str:
        return f"{self.name} ({self.channel}, {self.kind})"
