from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self):
        from django.db.models.signals import post_migrate

        from providers.registry import register_provider

        from . import receivers  # noqa: F401 - connects django-anymail's tracking signal
        from .periodic import periodic_tasks_install
        from .services.inbox import InboxProvider

        register_provider(InboxProvider)

        post_migrate.connect(periodic_tasks_install, sender=self, dispatch_uid="beacon-periodic-tasks")
