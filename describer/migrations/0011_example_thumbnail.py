"""Examples get a small thumbnail for lists. Existing examples get theirs when a page first
shows them (describer/examples.py: example_thumbnail)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("describer", "0010_token_expiry_parse_status_queued_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="example",
            name="thumbnail",
            field=models.ImageField(
                blank=True, editable=False, upload_to="examples/thumbnails/", verbose_name="thumbnail"
            ),
        ),
    ]
