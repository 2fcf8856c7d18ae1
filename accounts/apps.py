from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and API tokens"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from .services import account_tokens_forget

        def forget(sender, instance, **kwargs):
            account_tokens_forget(account_id=instance.pk)

        post_save.connect(forget, sender=get_user_model(), dispatch_uid="beacon-account-tokens-forget", weak=False)
        post_delete.connect(
            forget, sender=get_user_model(), dispatch_uid="beacon-account-tokens-forget-delete", weak=False
        )
