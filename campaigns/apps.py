from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings

        from notifications.periodic import Periodic, periodic_register

        periodic_register(
            Periodic(
                "watch-campaigns",
                "campaigns.tasks.campaigns_watch",
                "Start scheduled campaigns that fell due; hand a running campaign whose fan-out stalled "
                "(its worker died) to a new task.",
                every_seconds=int(settings.BEACON_CAMPAIGN_WATCH_SECONDS),
            )
        )
