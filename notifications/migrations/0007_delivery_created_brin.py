"""A BRIN index on deliveries' created_at, on PostgreSQL: rows arrive in created_at order,
so a few pages of summary answer "created since T" for the failure watch and upkeep at
almost no cost per insert (a B-tree here would be written on every delivery)."""

from django.db import migrations

INDEX = "delivery_created_brin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON notifications_delivery USING brin (created_at)")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("notifications", "0006_schedule_context")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
