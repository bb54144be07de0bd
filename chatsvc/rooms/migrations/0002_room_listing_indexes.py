"""Indexes for GET /api/v1/connections: newest first per tenant (and status),
and a GIN index for its metadata filter (jsonb @>) on PostgreSQL only."""

from django.db import migrations, models

GIN = "rooms_room_metadata_gin"


def create_gin(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {GIN} ON rooms_room USING gin (metadata jsonb_path_ops)"
        )


def drop_gin(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {GIN}")


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="room",
            index=models.Index(fields=["tenant", "-connection_id"], name="rooms_tenant_newest_idx"),
        ),
        migrations.AddIndex(
            model_name="room",
            index=models.Index(
                fields=["tenant", "status", "-connection_id"], name="rooms_tenant_status_idx"
            ),
        ),
        migrations.RunPython(create_gin, drop_gin, elidable=False),
    ]
