"""The starter set in examples/starter/: complete, varied, canonical, and rendered from the
current Mermaid sources by scripts/render_examples.py."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest
from PIL import Image

from describer import examples
from describer.postprocess import structure_description
from tests.example_files import STARTER

NAMES = sorted(path.stem for path in STARTER.glob("*.txt"))


def load_render_script():
    spec = importlib.util.spec_from_file_location("render_examples", STARTER.parent.parent / "scripts" / "render_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metadata(name: str) -> tuple[str, str]:
    _, header = examples.split_metadata((STARTER / f"{name}.mmd").read_text(encoding="utf-8"))
    return header


def test_there_are_at_least_40_complete_examples_and_nothing_else():
    files = sorted(path.name for path in STARTER.iterdir())

    assert len(NAMES) >= 40
    assert files == sorted(f"{name}{suffix}" for name in NAMES for suffix in (".mmd", ".png", ".txt"))
    assert all(examples.name_problem(name) is None for name in NAMES)


def test_the_set_is_varied_and_about_half_russian():
    kinds = Counter(metadata(name) for name in NAMES)
    languages = Counter(language for _, language in kinds.elements())

    assert set(kinds) == {("flowchart", "en"), ("flowchart", "ru"), ("bpmn", "en"), ("bpmn", "ru")}
    assert min(kinds.values()) >= 8
    assert 0.4 <= languages["ru"] / len(NAMES) <= 0.6


@pytest.mark.parametrize("name", NAMES)
def test_each_example_is_consistent_canonical_and_small(name):
    text = (STARTER / f"{name}.txt").read_text(encoding="utf-8")
    diagram_type, language = metadata(name)
    structure = structure_description(text)

    assert structure.to_markdown() == text  # exactly the describer's own layout
    assert structure.language == language
    assert name.startswith(f"{'flow' if diagram_type == 'flowchart' else 'bpmn'}-{language}-")
    assert len(structure.steps) >= 4 and structure.end_states
    assert bool(structure.participants) == (diagram_type == "bpmn")
    targets = [branch.target_step for step in structure.steps for branch in step.branches if branch.target_step]
    assert all(1 <= target <= len(structure.steps) for target in targets)
    png = STARTER / f"{name}.png"
    assert png.stat().st_size < 150 * 1024
    with Image.open(png) as image:
        image.load()
        assert min(image.size) >= 200


def test_every_image_was_rendered_from_its_current_source():
    render = load_render_script()

    stale = [
        name
        for name in NAMES
        if render.rendered_key(STARTER / f"{name}.png") != render.render_key((STARTER / f"{name}.mmd").read_text())
    ]

    assert not stale, f"run scripts/render_examples.py: {stale}"


@pytest.mark.browser
def test_the_render_script_draws_new_sources_and_skips_unchanged_ones(tmp_path):
    render = load_render_script()
    (tmp_path / "flow-en-tiny.mmd").write_text('%% type: flowchart, lang: en\nflowchart TD\n  a(["Start"]) --> b["Work"]\n')
    (tmp_path / "only-a-comment.mmd").write_text("%% type: other, lang: en\n")

    first = render.render_folder(tmp_path, force=False)
    second = render.render_folder(tmp_path, force=False)

    assert first == (1, 0, []) and second == (0, 1, [])
    with Image.open(tmp_path / "flow-en-tiny.png") as image:
        assert image.text[render.HASH_KEY] == render.render_key((tmp_path / "flow-en-tiny.mmd").read_text())
    assert not (tmp_path / "only-a-comment.png").exists()
