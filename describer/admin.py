from __future__ import annotations

import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminFileWidget
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from describer import examples
from describer.images import check_extension, check_size, decode_fully, open_checked
from describer import adapters as adapter_files
from describer.models import Adapter, Conversion, ConversionExample, Example, Worker
from describer.postprocess import structure_description
from describer.services import wake_worker


EXCERPT_CHARS = 80
MARKDOWN_LINE_START = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*)+")
MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
MARKDOWN_EMPHASIS = re.compile(r"\*\*|__|`")


def plain_lines(markdown: str) -> list[str]:
    """Each line of a description without its Markdown markers (headings, list items, links,
    bold, code); empty lines stay, as empty strings."""
    lines = (MARKDOWN_LINE_START.sub("", line) for line in markdown.splitlines())
    return [MARKDOWN_EMPHASIS.sub("", MARKDOWN_LINK.sub(r"\1", line)).strip() for line in lines]


class EmbeddingFilter(admin.SimpleListFilter):
    title = _("embedding")
    parameter_name = "embedding"

    def lookups(self, request, model_admin):
        return [("yes", _("Embedded")), ("pending", _("Pending")), ("failed", _("Failed"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(embedding__isnull=False)
        if self.value() == "pending":
            return queryset.filter(embedding__isnull=True, embedding_error="")
        if self.value() == "failed":
            return queryset.filter(embedding__isnull=True).exclude(embedding_error="")
        return queryset


class ServedImage:
    """A stored image as the admin's file widget shows it, with the address the site serves it at."""

    def __init__(self, file, url: str) -> None:
        self.file, self.url = file, url

    def __str__(self) -> str:
        return str(self.file)


class ExampleImageWidget(AdminFileWidget):
    """Its "Currently:" link goes to /examples/<pk>/image/: media is private (never served at
    MEDIA_URL), so the file's own url would be a 404."""

    served_url = ""

    def format_value(self, value):
        value = super().format_value(value)
        if self.served_url and self.is_initial(value):
            return ServedImage(value, self.served_url)
        return value


class ExampleAdminForm(forms.ModelForm):
    class Meta:
        model = Example
        fields = "__all__"
        widgets = {"image": ExampleImageWidget}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["image"].widget.served_url = reverse("example_image", args=[self.instance.pk])

    def clean_image(self):
        """The checks uploads and imports get: PNG or JPEG, size, pixels, not truncated."""
        image = self.cleaned_data["image"]
        if "image" in self.changed_data:
            check_extension(image.name)
            check_size(image.size)
            decode_fully(open_checked(image.read()))
            image.seek(0)
        return image


@admin.register(Example)
class ExampleAdmin(admin.ModelAdmin):
    """Curation of the retrieval examples. The web never loads CLIP: a new or replaced image
    leaves the example pending, and the worker embeds it between jobs (status in the list)."""

    form = ExampleAdminForm
    # Few, narrow columns, so that the description's excerpt has room and nothing is cut off
    # beside the filters at 1440 px (the full text is the excerpt's tooltip).
    list_display = ["list_thumbnail", "name", "excerpt", "type_and_language", "list_embedding_status", "updated"]
    list_display_links = ["list_thumbnail", "name"]
    list_filter = [EmbeddingFilter, "diagram_type", "language"]
    search_fields = ["name", "description", "mermaid"]
    readonly_fields = [
        "preview", "embedding_status", "embedding_model", "image_sha256", "source", "created_at", "updated_at",
    ]  # fmt: skip
    fields = [
        "name", "image", "preview", "description", "mermaid", "diagram_type", "language",
        "embedding_status", "embedding_model", "image_sha256", "source", "created_at", "updated_at",
    ]  # fmt: skip
    actions = ["re_embed", "export_selected"]

    def get_queryset(self, request):
        # The list needs to know whether there is a vector, not its 512 numbers.
        has_embedding = ExpressionWrapper(Q(embedding__isnull=False), output_field=BooleanField())
        return super().get_queryset(request).defer("embedding").annotate(has_embedding=has_embedding)

    def save_model(self, request, obj: Example, form, change: bool) -> None:
        image_changed = "image" in form.changed_data
        old_image = Example.objects.get(pk=obj.pk).image.name if change and image_changed else ""
        if image_changed:
            examples.note_new_image(obj, b"".join(obj.image.chunks()))
        if not obj.name:  # export and import identify examples by name
            title = structure_description(obj.description).title
            obj.name = examples.suggest_name(title, obj.diagram_type, obj.language)
        super().save_model(request, obj, form, change)
        if image_changed:
            if old_image and old_image != obj.image.name:
                storage = obj.image.storage
                transaction.on_commit(lambda: storage.delete(old_image))
            transaction.on_commit(wake_worker)
            self.message_user(request, _("The worker will embed the new image shortly; the list shows when."))

    def get_urls(self):
        thumbnail = path(
            "<int:pk>/thumbnail/", self.admin_site.admin_view(self.thumbnail_view), name="describer_example_thumbnail"
        )
        return [thumbnail, *super().get_urls()]

    def thumbnail_view(self, request, pk: int) -> HttpResponse:
        """The list's small image (describer/examples.py makes it), not the full-size upload."""
        content = examples.example_thumbnail(get_object_or_404(Example, pk=pk))
        if content is None:
            raise Http404("This example has no readable image.")
        response = HttpResponse(content, content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=3600"
        return response

    @admin.display(description=_("image"))
    def list_thumbnail(self, obj: Example):
        if not obj.pk or not obj.image:
            return "—"
        url = reverse("admin:describer_example_thumbnail", args=[obj.pk])
        style = "display:block;max-height:48px;max-width:80px"
        return format_html('<img src="{}" alt="" loading="lazy" style="{}">', url, style)

    @admin.display(description=_("preview"))
    def preview(self, obj: Example):
        if not obj.pk or not obj.image:
            return "—"
        return format_html('<img src="{}" alt="" style="max-width:480px">', reverse("example_image", args=[obj.pk]))

    @admin.display(description=_("description"))
    def excerpt(self, obj: Example):
        pairs = list(zip(obj.description.splitlines(), plain_lines(obj.description)))
        # Section headings ("Steps", "Participants") say nothing about this one example.
        shown = " · ".join(plain for raw, plain in pairs if plain and not raw.lstrip().startswith("##"))
        full = "\n".join(plain for raw, plain in pairs if plain)
        excerpt = Truncator(shown).chars(EXCERPT_CHARS)
        return format_html('<span title="{}" style="display:block;min-width:14em">{}</span>', full, excerpt)

    @admin.display(description=_("type, language"), ordering="diagram_type")
    def type_and_language(self, obj: Example) -> str:
        return f"{obj.get_diagram_type_display()}, {obj.get_language_display()}"

    @admin.display(description=_("embedded"))
    def embedding_status(self, obj: Example, *, error_chars: int | None = None):
        """Yes, pending, or failed with the reason; the list shortens the reason (error_chars)
        and keeps all of it in the tooltip."""
        has_embedding = getattr(obj, "has_embedding", None)
        if has_embedding is None:
            has_embedding = obj.embedding is not None
        if has_embedding:
            return format_html('<img src="{}" alt=""> {}', static("admin/img/icon-yes.svg"), _("yes"))
        if obj.embedding_error:
            reason = Truncator(obj.embedding_error).chars(error_chars) if error_chars else obj.embedding_error
            return format_html(
                '<span title="{}"><img src="{}" alt=""> {}: {}</span>',
                obj.embedding_error, static("admin/img/icon-no.svg"), _("failed"), reason,
            )  # fmt: skip
        return format_html(
            '<img src="{}" alt=""> {}', static("admin/img/icon-unknown.svg"), _("pending")
        )

    @admin.display(description=_("embedded"))
    def list_embedding_status(self, obj: Example):
        return self.embedding_status(obj, error_chars=30)

    @admin.display(description=_("updated"), ordering="updated_at")
    def updated(self, obj: Example):
        moment = timezone.localtime(obj.updated_at)
        return format_html(
            '<time datetime="{}" title="{}" style="white-space:nowrap">{}</time>',
            moment.isoformat(), date_format(moment, "DATETIME_FORMAT"), date_format(moment, "DATE_FORMAT"),
        )  # fmt: skip

    @admin.display(description=_("source conversion"))
    def source(self, obj: Example):
        if not obj.source_conversion_id:
            return "—"
        url = reverse("admin:describer_conversion_change", args=[obj.source_conversion_id])
        return format_html('<a href="{}">{}</a>', url, obj.source_conversion)

    @admin.action(description=_("Re-embed the selected examples"))
    def re_embed(self, request, queryset) -> None:
        count = examples.queue_embedding(queryset)
        self.message_user(request, _("%(count)s examples queued; the worker embeds them shortly.") % {"count": count})

    @admin.action(description=_("Export the selected examples (.zip)"))
    def export_selected(self, request, queryset) -> HttpResponse:
        content, problems = examples.export_zip(queryset)
        for stem, reason in problems:
            self.message_user(request, f"{stem}: {reason}", level=messages.WARNING)
        response = HttpResponse(content, content_type="application/zip")
        filename = f"examples-{timezone.now():%Y%m%d-%H%M}.zip"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class ConversionExampleInline(admin.TabularInline):
    model = ConversionExample
    extra = 0
    can_delete = False
    readonly_fields = ["example", "similarity", "rank"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """The workers page: each running worker's own report (its heartbeat), read-only."""

    list_display = ["name", "online", "model_name", "device", "batch_size", "jobs_in_hand", "started_at", "last_seen_at"]
    search_fields = ["name", "host"]

    @admin.display(boolean=True, description=_("online"))
    def online(self, obj: Worker) -> bool:
        return obj.is_online

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Adapter)
class AdapterAdmin(admin.ModelAdmin):
    """Fine-tuned adapters (`manage.py finetune`): staff choose the one the workers serve; a
    worker switches between jobs. Rows are made by the command, never by hand."""

    list_display = ["name", "is_active", "node_f1", "edge_f1", "base_model", "created_at", "problem_short"]
    list_filter = ["is_active"]
    readonly_fields = ["name", "path", "base_model", "weights_sha256", "node_f1", "edge_f1", "is_active", "problem",
                       "created_at", "report_summary"]  # fmt: skip
    exclude = ["report"]
    actions = ["make_active", "serve_base_model"]

    @admin.action(description=_("Serve the selected adapter (the workers switch between jobs)"))
    def make_active(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, _("Choose exactly one adapter to serve."), messages.ERROR)
            return
        adapter = queryset.get()
        try:
            adapter.activate()
        except adapter_files.AdapterProblem as error:
            Adapter.objects.filter(pk=adapter.pk).update(problem=str(error)[:2000])
            self.message_user(request, _("%(name)s was not made active: %(reason)s") % {"name": adapter.name, "reason": error},
                              messages.ERROR)  # fmt: skip
            return
        wake_worker()
        self.message_user(request, _("%(name)s is now active: the workers switch to it before their next job.")
                          % {"name": adapter.name})  # fmt: skip

    @admin.action(description=_("Serve the base model without an adapter"))
    def serve_base_model(self, request, queryset):
        Adapter.serve_base_model()
        wake_worker()
        self.message_user(request, _("No adapter is active now: the workers serve the base model (or DESCRIBER_ADAPTER)."))

    @admin.display(description=_("problem"))
    def problem_short(self, obj: Adapter) -> str:
        return Truncator(obj.problem).chars(80)

    @admin.display(description=_("training report"))
    def report_summary(self, obj: Adapter):
        report = obj.report or {}
        settings_used = report.get("settings", {})
        rows = [
            (_("method"), settings_used.get("method", "")),
            (_("data"), _("%(training)s training, %(validation)s validation samples (SHA-256 %(sha)s)") % {
                "training": report.get("data", {}).get("training"), "validation": report.get("data", {}).get("validation"),
                "sha": str(report.get("data", {}).get("sha256", ""))[:12]}),
            (_("settings"), ", ".join(f"{key} {settings_used.get(key)}" for key in ("rank", "alpha", "learning_rate", "epochs", "repeats", "patience"))),
            (_("stopped"), report.get("stopped", "")),
            (_("time"), _("%(seconds)s s, %(rate)s samples/s") % {"seconds": report.get("seconds"), "rate": report.get("samples_per_second")}),
        ]  # fmt: skip
        epochs = [(f"{_('epoch')} {e['epoch']}", f"loss {e['train_loss']}, node F1 {e['validation'].get('node_f1')}, "
                   f"edge F1 {e['validation'].get('edge_f1')}") for e in report.get("epochs", [])]  # fmt: skip
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", [(str(label), str(value)) for label, value in rows + epochs]),
        )

    def has_add_permission(self, request) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Every field is read-only (the command writes them): no Save buttons that save nothing.
        hidden = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, {**hidden, **(extra_context or {})})


@admin.register(Conversion)
class ConversionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "kind", "status", "stage", "coverage_percent", "adapter_name", "attempts",
                    "created_at", "finished_at"]  # fmt: skip
    list_filter = ["kind", "status", "stage", "cut_off", "adapter", "created_at"]
    search_fields = ["id", "title", "original_filename", "owner__username"]
    date_hierarchy = "created_at"
    inlines = [ConversionExampleInline]
    # Media is private (nothing is served at MEDIA_URL): the upload is shown by `uploaded_image`.
    exclude = ["input_image", "input_thumbnail"]

    def get_readonly_fields(self, request, obj=None):
        names = [field.name for field in self.model._meta.fields if field.name != "input_thumbnail"]
        return ["uploaded_image" if name == "input_image" else name for name in names]

    def get_urls(self):
        # object_id as in the admin's own URLs (its lookup turns a malformed one into a 404).
        image = path(
            "<path:object_id>/image/", self.admin_site.admin_view(self.image_view), name="describer_conversion_image"
        )
        return [image, *super().get_urls()]

    def image_view(self, request, object_id: str) -> FileResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        conversion = self.get_object(request, object_id)
        if conversion is None or not conversion.input_image:
            raise Http404("No such conversion, or it has no uploaded image.")
        return FileResponse(conversion.input_image.open("rb"))

    @admin.display(description=_("uploaded image"))
    def uploaded_image(self, obj: Conversion):
        if not obj.input_image:
            return "—"
        url = reverse("admin:describer_conversion_image", args=[obj.pk])
        return format_html('<a href="{}"><img src="{}" alt="" style="max-width:320px"></a>', url, url)

    @admin.display(description=_("coverage"), ordering="coverage")
    def coverage_percent(self, obj: Conversion) -> str:
        return "–" if obj.coverage is None else f"{obj.coverage:.0%}"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
