from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _

from describer.images import NormalisedImage, allowed_text, check_extension, check_size, normalise_upload
from describer.mermaid import MERMAID_MAX_CHARS
from describer.models import Conversion, Example

PARSE_ERROR_MAX_CHARS = 2000


def grouped(number: int) -> str:
    """20,000 in English, 20 000 in Russian (where "20,000" would read as twenty)."""
    return number_format(number, force_grouping=True)


class UploadForm(forms.Form):
    image = forms.FileField(
        label=_("Diagram image"),
        widget=forms.ClearableFileInput(attrs={"accept": "image/png,image/jpeg"}),
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
        self.normalised: NormalisedImage | None = None

    def clean_image(self):
        upload = self.cleaned_data["image"]
        # Cheap checks first, so a 2 GB file is refused before it is read into memory.
        check_extension(upload.name)
        check_size(upload.size)
        self.normalised = normalise_upload(upload.read(), upload.name)
        return upload


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
