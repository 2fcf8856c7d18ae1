from django.core.management.base import BaseCommand, CommandError

from campaigns.models import Campaign
from campaigns.services import campaign_counts


class Command(BaseCommand):
    help = "A campaign's status, progress, counts by delivery status and skipped reasons."

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int)

    def handle(self, *args, campaign_id, **options):
        campaign = Campaign.objects.filter(pk=campaign_id).select_related("audience").first()
        if campaign is None:
            raise CommandError(f"No campaign {campaign_id}.")
        counts = campaign_counts(campaign)
        progress = "-" if counts["progress"] is None else f"{counts['progress']:.1%}"
        self.stdout.write(
            f"{campaign.name} ({campaign.pk}): {campaign.status}; {counts['recipients_reached']:,} of "
            f"{counts['audience_size']:,} reached ({progress})"
        )
        for status, n in counts["by_status"].items():
            if n:
                self.stdout.write(f"  {status:<12} {n:>10,}")
        if counts["skipped_reasons"]:
            self.stdout.write(f"  skipped      {counts['skipped']:>10,}")
            for row in counts["skipped_reasons"]:
                self.stdout.write(f"    {row['count']:>8,}  {row['reason']}")
