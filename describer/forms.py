from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.template.defaultfilters import filesizeformat
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _

from describer.images import (
    ALLOWED_EXTENSIONS,
    MIN_SIDE,
    NormalisedImage,
    allowed_text,
    check_upload,
    extension_problem,
    format_problem,
    normalise_upload,
    pixels_problem,
    size_problem,
    small_problem,
)
from describer.mermaid import MERMAID_MAX_CHARS
from describer.models import Conversion, Example

PARSE_ERROR_MAX_CHARS = 2000


def grouped(number: int) -> str:
    """20,000 in English, 20 000 in Russian (where "20,000" would read as twenty)."""
    return number_format(number, force_grouping=True)


# Each image of one upload becomes its own conversion; more at once would make one request
# decode too much (each may be UPLOAD_MAX_BYTES and UPLOAD_MAX_PIXELS).
UPLOAD_MAX_FILES = 10


def named(filename: str, message: str) -> str:
    """A refusal among several files says which file it is about."""
    return f"{filename}: {message}"


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Files sent under one name, cleaned to a list; a plain dict of files (the API) gives one."""

    widget = MultipleFileInput

    def clean(self, data, initial=None) -> list:
        files = list(data) if isinstance(data, (list, tuple)) else [data] if data else []
        clean_one = super().clean
        if not files:
            return [clean_one(None, initial)]  # the "required" refusal
        return [clean_one(file, initial) for file in files]


class UploadForm(forms.Form):
    image = MultipleFileField(
        label=_("Diagram images"),
        # Empty files reach clean_image, whose refusal names them.
        allow_empty_file=True,
        widget=MultipleFileInput(attrs={"accept": "image/png,image/jpeg"}),
    )
    language = forms.ChoiceField(
        label=_("Language of the description"), choices=Conversion.Language.choices, required=False
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Built per form, not at import: the limits are settings and the text is translated.
        allowed = allowed_text()
        field = self.fields["image"]
        field.help_text = allowed
        # Plain _() calls, not inside f-strings: xgettext does not look into f-strings.
        choose, empty, again = (
            _("Choose a diagram image to upload."),
            _("The file is empty."),
            _("No file was received; upload it again."),
        )
        field.error_messages.update(
            {
                "required": f"{choose} {allowed}",
                "missing": f"{choose} {allowed}",
                "empty": f"{empty} {allowed}",
                "invalid": f"{again} {allowed}",
            }
        )
        self.normalised_images: list[tuple[str, NormalisedImage]] = []
        # Positions of the refused files among those sent: the page's script drops them and keeps the rest.
        self.refused_indexes: list[int] = []

    @property
    def normalised(self) -> NormalisedImage | None:
        """The first image (the API sends one)."""
        return self.normalised_images[0][1] if self.normalised_images else None

    def clean_image(self) -> list:
        uploads = self.cleaned_data["image"]
        if len(uploads) > UPLOAD_MAX_FILES:
            raise forms.ValidationError(too_many_files_text())
        # Cheap checks of every file first, so a 2 GB file is refused before it is read into
        # memory, and a bad file among several before any of the others is decoded.
        self._refuse_each(uploads, lambda upload: check_upload(upload, upload.name, upload.size))
        self._refuse_each(uploads, self._normalise)
        return uploads

    def _normalise(self, upload) -> None:
        self.normalised_images.append((upload.name, normalise_upload(upload.read(), upload.name)))

    def _refuse_each(self, uploads: list, check) -> None:
        """Run `check` on every upload; one refusal, naming each refused file, if any failed."""
        errors = []
        for index, upload in enumerate(uploads):
            try:
                check(upload)
            except forms.ValidationError as error:
                self.refused_indexes.append(index)
                errors.extend(named(upload.name, message) for message in error.messages)
        if errors:
            raise forms.ValidationError(errors)

    def browser_checks(self) -> dict[str, str]:
        """What the page's script checks before sending (static/js/upload.js), from the same
        settings and texts as the server's checks; {name}, {size}, {w}, {h}, {mp} are filled in there."""
        allowed = allowed_text()

        def refusal(problem: str) -> str:
            return named("{name}", f"{problem} {allowed}")

        return {
            "max_bytes": str(settings.UPLOAD_MAX_BYTES),
            "max_pixels": str(settings.UPLOAD_MAX_PIXELS),
            "min_side": str(MIN_SIDE),
            "max_files": str(UPLOAD_MAX_FILES),
            "size_units": "|".join(size_templates()),
            "extensions": ",".join(sorted(ALLOWED_EXTENSIONS)),
            "extension": refusal(extension_problem()),
            "format": refusal(format_problem()),
            "size": refusal(size_problem("{size}")),
            "pixels": refusal(pixels_problem("{w}", "{h}", "{mp}")),
            "small": refusal(small_problem("{w}", "{h}")),
            "empty": refusal(_("The file is empty.")),
            "count": named("{name}", too_many_files_text()),
        }


def size_templates() -> list[str]:
    """filesizeformat's forms for GB, MB, KB and bytes with {n} for the number, in the active
    language ("{n}\xa0MB", "{n}\xa0МБ"): the script writes sizes exactly as the server's messages do."""
    one_and_a_half = number_format(1.5, decimal_pos=1)
    units = [filesizeformat(1.5 * 1024**power).replace(one_and_a_half, "{n}", 1) for power in (3, 2, 1)]
    return [*units, filesizeformat(500).replace("500", "{n}", 1)]


def too_many_files_text() -> str:
    return _("At most %(limit)s images can be sent at once.") % {"limit": UPLOAD_MAX_FILES}


class TextForm(forms.Form):
    text = forms.CharField(
        label=_("Process description"),
        widget=forms.Textarea(attrs={"rows": 14}),
        strip=True,
        error_messages={"required": _("Write or paste a description of the process first.")},
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limit = settings.TEXT_INPUT_MAX_CHARS
        self.fields["text"].widget.attrs["maxlength"] = limit
        self.fields["text"].help_text = _("At most %(limit)s characters.") % {"limit": grouped(limit)}

    def clean_text(self):
        text = self.cleaned_data["text"]
        limit = settings.TEXT_INPUT_MAX_CHARS
        if len(text) > limit:
            raise forms.ValidationError(
                _("The text has %(length)s characters; at most %(limit)s are allowed.")
                % {"length": grouped(len(text)), "limit": grouped(limit)}
            )
        return text


class MermaidForm(forms.Form):
    """Mermaid code from the editor, with the browser parser's message when it did not parse."""

    code = forms.CharField(
        strip=False,
        error_messages={"required": _("The Mermaid code is empty; write at least the flowchart's first line.")},
    )
    parse_error = forms.CharField(required=False, strip=True)

    def clean_code(self):
        code = self.cleaned_data["code"].replace("\r\n", "\n").strip("\n")
        if not code.strip():
            raise forms.ValidationError(self.fields["code"].error_messages["required"])
        if len(code) > MERMAID_MAX_CHARS:
            raise forms.ValidationError(
                _("The code has %(length)s characters; at most %(limit)s are allowed.")
                % {"length": grouped(len(code)), "limit": grouped(MERMAID_MAX_CHARS)}
            )
        return code

    def clean_parse_error(self):
        return self.cleaned_data["parse_error"][:PARSE_ERROR_MAX_CHARS]


class RepairForm(MermaidForm):
    def clean_parse_error(self):
        error = super().clean_parse_error()
        if not error:
            raise forms.ValidationError(_("This code parses; there is nothing to repair."))
        return error


class HistoryFilterForm(forms.Form):
    q = forms.CharField(label=_("Search"), required=False, max_length=200)
    kind = forms.ChoiceField(label=_("Kind"), required=False, choices=[("", _("All kinds")), *Conversion.Kind.choices])
    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("All statuses")), *Conversion.Status.choices]
    )

    def filter(self, queryset):
        if not self.is_valid():
            return queryset
        data = self.cleaned_data
        if data["kind"]:
            queryset = queryset.filter(kind=data["kind"])
        if data["status"]:
            queryset = queryset.filter(status=data["status"])
        return queryset.search(data["q"])


class SignupForm(UserCreationForm):
    pass


class PromoteForm(forms.ModelForm):
    """Staff save a finished result as a retrieval example, editing the description first."""

    class Meta:
        model = Example
        fields = ["name", "description", "diagram_type", "language"]
        labels = {"name": _("Example name"), "description": _("Reference description")}
        help_texts = {
            "name": _("ASCII letters, digits, “-” and “_”; the file name in import and export."),
            "description": _("Models imitate it: keep the structured layout and correct what the model got wrong."),
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 16})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = True
