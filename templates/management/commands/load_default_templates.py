import json
from pathlib import Path

from django.core.management.base import BaseCommand

from templates.services import system_templates_load

DEFAULTS_DIR = Path(__file__).resolve().parents[2] / "defaults"


class Command(BaseCommand):
    help = "Load the default booking-lifecycle templates shared by every account (safe to run again)."

    def handle(self, *args, **options):
        definitions = []
        for path in sorted(DEFAULTS_DIR.glob("*.json")):
            definitions.extend(json.loads(path.read_text()))
        counts = system_templates_load(definitions=definitions)
        self.stdout.write(
            f"Default templates: {counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged."
        )
