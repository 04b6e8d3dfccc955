from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from describer.models import Conversion, ConversionExample, Example


class EmbeddedFilter(admin.SimpleListFilter):
    title = _("embedded")
    parameter_name = "embedded"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(embedding__isnull=False)
        if self.value() == "no":
            return queryset.filter(embedding__isnull=True)
        return queryset


@admin.register(Example)
class ExampleAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "name", "excerpt", "diagram_type", "language", "is_embedded", "updated_at"]
    list_display_links = ["thumbnail", "name"]
    list_filter = [EmbeddedFilter, "diagram_type", "language"]
    search_fields = ["name", "description", "mermaid"]
    readonly_fields = ["preview", "embedding_model", "source_conversion", "created_at", "updated_at"]
    fields = ["name", "image", "preview", "description", "mermaid", "diagram_type", "language",
              "embedding_model", "source_conversion", "created_at", "updated_at"]

    @admin.display(description=_("image"))
    def thumbnail(self, obj: Example):
        if not obj.pk or not obj.image:
            return "—"
        return format_html('<img src="{}" alt="" style="max-height:60px;max-width:100px">', reverse("example_image", args=[obj.pk]))

    @admin.display(description=_("preview"))
    def preview(self, obj: Example):
        if not obj.pk or not obj.image:
            return "—"
        return format_html('<img src="{}" alt="" style="max-width:480px">', reverse("example_image", args=[obj.pk]))

    @admin.display(description=_("description"))
    def excerpt(self, obj: Example) -> str:
        return Truncator(obj.description).chars(90)

    @admin.display(description=_("embedded"), boolean=True)
    def is_embedded(self, obj: Example) -> bool:
        return obj.embedding is not None


class ConversionExampleInline(admin.TabularInline):
    model = ConversionExample
    extra = 0
    can_delete = False
    readonly_fields = ["example", "similarity", "rank"]


@admin.register(Conversion)
class ConversionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "kind", "status", "stage", "attempts", "created_at", "finished_at"]
    list_filter = ["kind", "status", "stage", "created_at"]
    search_fields = ["id", "title", "original_filename", "owner__username"]
    date_hierarchy = "created_at"
    inlines = [ConversionExampleInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
