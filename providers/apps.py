from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from .models import ProviderConfig
        from .registry import RECORD_ACCOUNTS

        def records_changed(**kwargs):
            # Dispatch's "which accounts have records" is read again, here at once and in
            # other processes within its few seconds.
            RECORD_ACCOUNTS.forget()

        post_save.connect(records_changed, sender=ProviderConfig, weak=False, dispatch_uid="beacon-provider-records")
        post_delete.connect(
            records_changed, sender=ProviderConfig, weak=False, dispatch_uid="beacon-provider-records-d"
        )
