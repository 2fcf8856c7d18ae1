from django.core.management.base import BaseCommand

from notifications.services import deliveries_sweep


class Command(BaseCommand):
    help = "Queue due scheduled deliveries, re-enqueue lost ones and settle abandoned sends (what beat runs)."

    def handle(self, *args, **options):
        counts = deliveries_sweep()
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in counts.items()))
