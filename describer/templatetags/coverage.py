"""{% coverage_of conversion as coverage %}: a description's grounding (describer.grounding),
counted and sorted for the Coverage panel and the label boxes over the image; `|percent`."""

from __future__ import annotations

from django import template

register = template.Library()


@register.simple_tag
def coverage_of(conversion) -> dict | None:
    grounding = conversion.grounding
    if not grounding:
        return None
    # Each label keeps its index: the steps' "labels" and the boxes' data-label point at it.
    labels = [{**label, "index": index, "rect": _padded(label["box"])}
              for index, label in enumerate(grounding.get("labels", []))]  # fmt: skip
    steps = grounding.get("steps", [])
    return {
        "percent": percent(grounding.get("score")),
        "width": grounding.get("image_width") or conversion.image_width,
        "height": grounding.get("image_height") or conversion.image_height,
        "labels": labels,
        "used_count": sum(1 for label in labels if label.get("used")),
        "step_count": len(steps),
        "grounded_count": sum(1 for step in steps if step.get("grounded")),
        "omissions": [label for label in labels if not label.get("used")],
        "inventions": [step for step in steps if not step.get("grounded")],
    }


def _padded(box: list[float]) -> list[float]:
    """OCR boxes hug the letters: a little room around them keeps the outline off the text."""
    x, y, width, height = box
    pad = max(2, round(height * 0.2))
    return [x - pad, y - pad, width + 2 * pad, height + 2 * pad]


@register.filter
def percent(score: float | None) -> int | None:
    """0.875 → 88; None stays None (not measured)."""
    return None if score is None else round(score * 100)
