"""Grounding with the real Tesseract: reading a diagram's labels (describer/ocr.py) and how a
description covers them (describer/grounding.py)."""

from __future__ import annotations

import io
import math

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from describer import grounding, ocr, prompts
from describer.graph.generate import plan_item
from describer.graph.images import drawn_labels, render_png
from describer.graph.text import render_text
from describer.models import Conversion
from describer.postprocess import structure_description
from tests.conftest import run_next

SCALE = 1.5


def drawn(seed: int, index: int):
    plan = plan_item(seed, index)
    image = Image.open(io.BytesIO(render_png(plan.graph, scale=SCALE)))
    return plan.graph, image


def ground_truth(graph) -> dict:
    return structure_description(render_text(graph, graph.language), graph.language).as_dict()


def reading_of(*labels: tuple[str, tuple[int, int, int, int]]) -> ocr.Reading:
    words = lambda text, box: tuple(ocr.Word(word, box, 90.0) for word in text.split())  # noqa: E731
    return ocr.Reading(800, 600, "en", 0.0, tuple(ocr.TextLabel(text, box, words(text, box)) for text, box in labels), 0.1)


def structure(*steps: str, title: str = "Orders", conditions: dict[int, list[str]] | None = None) -> dict:
    conditions = conditions or {}
    return {"title": title, "language": "en", "participants": [], "end_states": [], "summary": "",
            "steps": [{"number": n, "text": text, "branches": [{"condition": c, "target_step": None, "target_end": ""}
                                                               for c in conditions.get(n, [])]}
                      for n, text in enumerate(steps, 1)]}  # fmt: skip


def overlap(a, b) -> float:
    """Intersection over the smaller box."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / max(1, min(a[2] * a[3], b[2] * b[3]))


# ---------------------------------------------------------------- the metric, by hand


def test_the_score_by_hand_counts_labels_used_and_steps_found():
    reading = reading_of(("Check the order", (10, 10, 100, 20)), ("Yes", (120, 10, 30, 20)),
                         ("No", (120, 40, 30, 20)), ("Ship it", (200, 10, 60, 20)))  # fmt: skip
    described = structure("Check the order", "Ship it", "Call the police", title="", conditions={1: ["Yes"]})
    coverage = grounding.measure(reading, described)
    # labels used: "Check the order", "Yes", "Ship it" (3 of 4; "No" never said)
    # steps found: 1 and 2 (2 of 3; "police"/"call" are nowhere in the picture)
    assert coverage.label_recall == 0.75
    assert coverage.step_precision == round(2 / 3, 4)
    assert coverage.score == round(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3), 4)  # 0.7059
    assert [label.text for label in coverage.omissions] == ["No"]
    assert [(step.number, step.text) for step in coverage.inventions] == [(3, "Call the police")]
    assert coverage.labels[0].steps == [1] and coverage.steps[0].labels == [0]
    assert coverage.steps[1].labels == [3]


def test_one_wrong_letter_in_a_long_word_still_matches_but_not_in_a_short_one():
    reading = reading_of(("Recelve the paymant", (0, 0, 10, 10)), ("Nо", (0, 0, 10, 10)))  # "Nо": Cyrillic о
    coverage = grounding.measure(reading, structure("Receive the payment", conditions={1: ["No"]}))
    assert [label.used for label in coverage.labels] == [True, False]


def test_words_split_by_the_reading_or_the_drawing_are_joined():
    reading = reading_of(("Заблокирова ть поставщика", (0, 0, 10, 10)), ("Получено подтве рждение", (0, 0, 10, 10)))
    coverage = grounding.measure(reading, structure("Заблокировать поставщика", "Получено подтверждение"))
    assert coverage.score == 1.0


def test_a_bare_start_or_end_is_implied_by_the_layout():
    reading = reading_of(("Start", (0, 0, 5, 5)), ("Конец", (0, 0, 5, 5)), ("Pack it", (0, 0, 5, 5)))
    assert grounding.measure(reading, structure("Pack it", title="")).label_recall == 1.0
    assert grounding.measure(reading, {**structure("x"), "steps": []}).label_recall == 0.0


def test_lone_marks_read_as_text_are_not_labels():
    reading = reading_of(("x", (0, 0, 5, 5)), ("f™", (0, 0, 5, 5)), ("4", (0, 0, 5, 5)), ("Pack", (0, 0, 5, 5)), ("No", (0, 0, 5, 5)))
    unsure = ocr.TextLabel("Oo", (0, 0, 5, 5), (ocr.Word("Oo", (0, 0, 5, 5), 61.0),))
    reading = ocr.Reading(800, 600, "en", 0.0, (*reading.labels, unsure), 0.1)
    coverage = grounding.measure(reading, structure("Pack", conditions={1: ["No"]}))
    assert [label.text for label in coverage.labels] == ["Pack", "No"] and coverage.score == 1.0


# ---------------------------------------------------------------- with Tesseract


@pytest.mark.parametrize("index", [1, 2, 5, 8])
def test_the_ground_truth_description_of_a_generated_diagram_covers_it(index):
    graph, image = drawn(3, index)
    coverage = grounding.measure(ocr.read_image(image), ground_truth(graph))
    assert coverage.score >= 0.95, [label.text for label in coverage.omissions]
    assert coverage.inventions == []


def test_leaving_k_steps_out_lowers_the_score_by_what_the_formula_says():
    graph, image = drawn(3, 3)  # a flowchart: a step's text is its label alone, no lane after it
    reading = ocr.read_image(image)
    full = ground_truth(graph)
    before = grounding.measure(reading, full)
    assert before.label_recall == 1.0
    # steps that say one label each, none of whose words any other part of the description says
    coverage_of = {step.number: step for step in before.steps}

    def without(number: int) -> set[str]:
        return set(grounding.description_words({**full, "steps": [s for s in full["steps"] if s["number"] != number]}))

    unique = [
        step for step in full["steps"]
        if step["number"] in coverage_of and len(coverage_of[step["number"]].labels) == 1
        and not (set(grounding.label_words(before.labels[coverage_of[step["number"]].labels[0]].text))
                 - grounding.COMMON_WORDS) & without(step["number"])
    ]  # fmt: skip
    assert len(unique) >= 3
    n = len(before.labels)
    for k in (1, 2, 3):
        dropped = {step["number"] for step in unique[:k]}
        shorter = {**full, "steps": [step for step in full["steps"] if step["number"] not in dropped]}
        after = grounding.measure(reading, shorter)
        recall = (n - k) / n
        assert after.label_recall == round(recall, 4)
        assert after.score == round(2 * recall / (1 + recall), 4)  # = 2(n−k)/(2n−k)
        assert {label.text for label in after.omissions} == {
            before.labels[step_labels].text for step in before.steps if step.number in dropped for step_labels in step.labels
        }


def test_invented_steps_are_flagged_and_lower_the_score():
    graph, image = drawn(3, 5)
    reading = ocr.read_image(image)
    full = ground_truth(graph)
    number = len(full["steps"]) + 1
    invented = {**full, "steps": [*full["steps"],
                                  {"number": number, "text": "Notify the tax office by fax", "branches": []},
                                  {"number": number + 1, "text": "Уведомить налоговую инспекцию", "branches": []}]}  # fmt: skip
    before, after = grounding.measure(reading, full), grounding.measure(reading, invented)
    assert [step.number for step in after.inventions] == [number, number + 1]
    steps = len(invented["steps"]) - sum(1 for s in invented["steps"] if not grounding.step_words(s["text"]))
    precision = (steps - 2) / steps
    assert after.step_precision == round(precision, 4)
    assert after.score == round(2 * before.label_recall * precision / (before.label_recall + precision), 4)


def test_labels_are_read_where_they_are_drawn_vertical_lane_names_included():
    graph, image = drawn(3, 5)  # lanes: "Курьерская служба", "Склад", written bottom to top
    reading = ocr.read_image(image)
    assert reading.language == "ru"
    truth = drawn_labels(graph, SCALE)
    found = 0
    for text, box in truth:
        match = [label for label in reading.labels if set(grounding.label_words(text)) <= set(ocr.words_of(label.text))]
        if match and max(overlap(box, label.box) for label in match) > 0.5:
            found += 1
    assert found == len(truth)
    vertical = {label.text for label in reading.labels if label.vertical}
    assert {"Склад", "Курьерская служба"} <= vertical  # a lane's name in two turned lines is one label


def test_a_diagram_photographed_askew_is_straightened_and_its_boxes_are_in_the_photos_pixels():
    graph, image = drawn(3, 1)
    turned = image.convert("RGB").rotate(2.0, resample=Image.BICUBIC, expand=True, fillcolor="white")
    reading = ocr.read_image(turned)
    assert math.isclose(reading.angle, -2.0, abs_tol=0.3)
    coverage = grounding.measure(reading, ground_truth(graph))
    assert coverage.label_recall >= 0.9
    cx, cy = turned.width / 2, turned.height / 2
    for text, (x, y, w, h) in drawn_labels(graph, SCALE)[:6]:
        # where the label's centre went when the picture turned 2° anticlockwise
        dx, dy = x + w / 2 + (turned.width - image.width) / 2 - cx, y + h / 2 + (turned.height - image.height) / 2 - cy
        angle = math.radians(2.0)
        px, py = cx + dx * math.cos(angle) + dy * math.sin(angle), cy - dx * math.sin(angle) + dy * math.cos(angle)
        assert any(lx <= px <= lx + lw and ly <= py <= ly + lh for lx, ly, lw, lh in (label.box for label in reading.labels)), text


def test_an_english_diagram_is_read_with_the_english_model():
    graph, image = drawn(3, 4)
    assert graph.language == "en"
    reading = ocr.read_image(image)
    assert reading.language == "en"
    assert not any("\u0400" <= character <= "\u04ff" for character in reading.text)


def test_the_language_is_chosen_from_upright_lines_not_turned_lane_names():
    graph, image = drawn(21, 13)  # two-line lane names; read as English they once tipped the choice
    assert graph.language == "ru" and graph.lanes
    assert ocr.read_image(image).language == "ru"


def test_missing_models_give_a_clear_message(tmp_path):
    with pytest.raises(ocr.OcrUnavailable, match="tesseract-ocr-eng and tesseract-ocr-rus"):
        ocr.read_image(Image.new("RGB", (50, 50), "white"), tessdata=str(tmp_path))


# ---------------------------------------------------------------- in the worker


def upload_drawn(make_conversion, seed=3, index=2) -> tuple[Conversion, object]:
    plan = plan_item(seed, index)
    conversion = make_conversion(image=False)
    png = render_png(plan.graph, scale=SCALE)
    conversion.input_image.save("drawn.png", ContentFile(png), save=False)
    conversion.image_width, conversion.image_height = Image.open(io.BytesIO(png)).size
    conversion.save()
    return conversion, plan.graph


@pytest.mark.django_db
def test_a_job_reads_the_image_beside_the_model_and_stores_its_coverage(runner, make_conversion):
    conversion, _ = upload_drawn(make_conversion)
    job = run_next(runner)
    assert job.pk == conversion.pk and job.status == Conversion.Status.DONE
    assert job.ocr_reading["language"] == "ru" and job.ocr_reading["labels"]
    assert set(job.grounding) >= {"score", "label_recall", "step_precision", "labels", "steps"}
    assert job.coverage == job.grounding["score"]
    assert job.timings["ocr_s"] > 0 and job.timings["ocr_wait_s"] >= 0
    # the tiny random model's text says none of the labels
    assert job.coverage < 0.5


@pytest.mark.django_db
def test_without_tesseracts_models_the_job_still_finishes_and_says_why(runner, make_conversion, settings):
    settings.OCR_TESSDATA = "/nowhere"
    upload_drawn(make_conversion)
    job = run_next(runner)
    assert job.status == Conversion.Status.DONE
    assert job.coverage is None and job.grounding is None
    assert "tesseract-ocr-eng" in job.ocr_reading["error"] or "not found" in job.ocr_reading["error"]


@pytest.mark.django_db
def test_ocr_off_reads_nothing(runner, make_conversion, settings):
    settings.DESCRIBER_OCR = False
    upload_drawn(make_conversion)
    job = run_next(runner)
    assert job.status == Conversion.Status.DONE
    assert job.ocr_reading is None and job.coverage is None and "ocr_s" not in job.timings


@pytest.mark.django_db
def test_the_prompt_setting_puts_the_labels_found_into_the_prompt(runner, make_conversion, settings, monkeypatch):
    settings.DESCRIBER_OCR_IN_PROMPT = True
    seen = []
    original = prompts.describe_messages

    def spy(*args, **kwargs):
        messages = original(*args, **kwargs)
        seen.append(messages)
        return messages

    monkeypatch.setattr(prompts, "describe_messages", spy)
    _, graph = upload_drawn(make_conversion)
    job = run_next(runner)
    texts = [part["text"] for part in seen[0][1]["content"] if part["type"] == "text"]
    found = next(text for text in texts if text.startswith("Text found in the diagram"))
    listed = {line[2:] for line in found.splitlines() if line.startswith("- ")}
    tasks = [node.label for node in graph.nodes if node.kind == "task"]
    assert sum(label in listed for label in tasks) >= 0.8 * len(tasks)
    assert job.coverage is not None  # the reading taken for the prompt is the one measured


def test_without_the_setting_the_prompt_has_no_ocr_text():
    messages = prompts.describe_messages(Image.new("RGB", (20, 20)), [], "en")
    assert not any("Text found" in part.get("text", "") for part in messages[1]["content"])
