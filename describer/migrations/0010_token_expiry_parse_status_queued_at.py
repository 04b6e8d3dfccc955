"""API tokens expire; a Mermaid version says whether it parses and what checked it; a
conversion remembers when its current run was queued (a repair's queue wait counts from
the repair).

Existing tokens keep working (no expiry): refusing them after an upgrade would break every
client at once. Existing versions get the parse status their origin allows: the editor posts
the browser parser's message with every edit (an empty one means it parsed); the model's,
repairs' and restored versions were never checked.
"""

import django.utils.timezone
from django.db import migrations, models
from django.db.models import F, Q


def backfill(apps, schema_editor):
    Conversion = apps.get_model("describer", "Conversion")
    MermaidVersion = apps.get_model("describer", "MermaidVersion")
    Conversion.objects.update(queued_at=F("created_at"))
    MermaidVersion.objects.exclude(parse_error="").update(parses=False, parse_checked_by="browser")
    MermaidVersion.objects.filter(Q(parse_error=""), origin="edit").update(parses=True, parse_checked_by="browser")


class Migration(migrations.Migration):

    dependencies = [
        ("describer", "0009_adapters"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="expires"),
        ),
        migrations.AddField(
            model_name="conversion",
            name="queued_at",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="queued"),
        ),
        migrations.AddField(
            model_name="mermaidversion",
            name="parse_checked_by",
            field=models.CharField(
                blank=True,
                choices=[
                    ("browser", "Mermaid's parser in the site's editor (the browser)"),
                    ("api_client", "The API client that saved it"),
                ],
                max_length=20,
                verbose_name="parse checked by",
            ),
        ),
        migrations.AddField(
            model_name="mermaidversion",
            name="parses",
            field=models.BooleanField(blank=True, null=True, verbose_name="parses"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
