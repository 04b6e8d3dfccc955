"""Grammar-constrained decoding: the grammars, the decoder under them, cut-off answers, jobs.

The grammars (describer/graph/grammar.py) are checked against the renderers' own output and
against hand-written texts the readers would not take; the decoder (FastDecoder, eagerly on the
CPU, and generate's fallback) runs the tiny random model under them, whose every token would
otherwise be nonsense, so whatever it writes is in the layout only because of the grammar.
"""

from __future__ import annotations

import pytest
import torch
import xgrammar

from describer import graphs
from describer.api.tokens import api_token_create
from describer.describing import Describe
from describer.drawing import Draw
from describer.evaluation import parsed
from describer.graph.generate import mermaid_drawer, plan_item
from describer.graph.mermaid import close_cut_off, render_mermaid
from describer.graph.text import complete_lines, render_text
from describer.inference.constraints import LONG_LINE_CHARS, RowConstraints
from describer.inference.fast_decode import RowLimits
from describer.inference.runtime import GenerationRequest
from describer.mermaid import extract_mermaid
from describer.models import Conversion
from tests.conftest import run_next
from tests.test_batching import diagram, request, run_batch, text_of

pytestmark = pytest.mark.django_db

DESCRIPTION_EN, DESCRIPTION_RU, DESCRIPTION_ANY, MERMAID = "description:en", "description:ru", "description:", "mermaid"


@pytest.fixture
def runtime(small_image_runtime):
    return small_image_runtime


def accepts(runtime, grammar: str, text: str, *, complete: bool = True) -> bool:
    """The grammar takes `text` (and, if `complete`, may end right after it)."""
    matcher = runtime.grammars.matcher(grammar)
    if not matcher.accept_string(text):
        return False
    if not complete:
        return True
    return any(matcher.accept_token(stop) for stop in runtime.grammars.info.stop_token_ids) and matcher.is_terminated()


def constrained(image, text: str, grammar: str | None, *, tokens: int = 300, min_tokens: int = 0) -> GenerationRequest:
    item = request(image, text, max_new_tokens=tokens, min_new_tokens=min_tokens)
    item.grammar = grammar
    return item


# --- The grammars -------------------------------------------------------------------------


def test_the_grammars_take_every_canonical_description_and_drawing(runtime):
    for index in range(60):
        graph = plan_item(3, index).graph
        for language, grammar in (("en", DESCRIPTION_EN), ("ru", DESCRIPTION_RU)):
            text = render_text(graph, language)
            assert accepts(runtime, grammar, text), text
            assert accepts(runtime, DESCRIPTION_ANY, text), text
        code = render_mermaid(graph).split("%% note")[0]
        assert accepts(runtime, MERMAID, code), code
        assert accepts(runtime, MERMAID, f"```mermaid\n{code}```"), code


@pytest.mark.parametrize(
    "text",
    [
        "Steps:\n1. Receive\n",  # no title line
        "# T\n\n## Steps\n2. Receive\n",  # steps start at 1
        "# T\n\n## Steps\n1. Receive\n3. Ship\n",  # and go on in order
        "# T\n\n## Steps\n1. Check\n   - If yes: go to step 2\n",  # a branch line ends with "."
        "# T\n\n## Steps\n1. Check\n   - If yes: somewhere.\n",  # a branch goes to a step or an end
        "# T\n\n## Steps\n1. Receive\n\n## Конечные состояния\n- Done\n",  # one language in an English job
        "# T\n\n## Steps\n1. \tReceive\n",  # no label starts with a space or holds a control character
    ],
)
def test_the_description_grammar_refuses_what_is_not_the_layout(runtime, text):
    assert not accepts(runtime, DESCRIPTION_EN, text)


def test_the_description_grammar_takes_the_layout_in_both_languages(runtime):
    english = "# Order\n\n## Steps\n1. Check (Sales)\n   - If yes: go to step 2.\n   - If no: end: Rejected.\n2. Ship\n"
    russian = "# Заказ\n\n## Шаги\n1. Проверить\n   - Если да: перейти к шагу 2.\n   - Иначе: конец.\n2. Отгрузить\n"
    assert accepts(runtime, DESCRIPTION_EN, english) and accepts(runtime, DESCRIPTION_ANY, english)
    assert accepts(runtime, DESCRIPTION_RU, russian) and accepts(runtime, DESCRIPTION_ANY, russian)
    assert not accepts(runtime, DESCRIPTION_EN, russian) and not accepts(runtime, DESCRIPTION_RU, english)


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ('flowchart TD\n    A(["Order placed"]) --> B{"Paid?"}\n    B -->|"Yes"| C["Ship"]\n', True),
        ('flowchart LR\n  subgraph sales ["Sales"]\n    a["Check"]\n  end\n  a --> b\n', True),
        ('flowchart LR\n    subgraph sales["Sales"]\n        a["Check"]\n    end\n', True),  # as the prompt writes it
        ('flowchart TD\n  a["x #quot;y#quot; <br>z"]\n', True),
        ("flowchart TD\n", False),  # draws nothing
        ('flowchart TD\n  end["x"]\n', False),  # a keyword as an id
        ('flowchart TD\n  a[x]\n', False),  # labels are quoted
        ('flowchart TD\n  a["say "hi""]\n', False),  # with no quote inside
        ('flowchart TD\n  a["<b>bold</b>"]\n', False),  # nor HTML
        ('flowchart TD\n  click a "https://example.com"\n', False),  # nor click handlers
        ('graph TD\n  a --> b\n', False),  # the header is "flowchart"
    ],
)
def test_the_mermaid_grammar_is_the_subset_both_readers_take(runtime, code, ok):
    assert accepts(runtime, MERMAID, code) is ok


# --- The decoder under the grammars ---------------------------------------------------------


def mixed_constrained_requests() -> list[GenerationRequest]:
    """Both kinds, all three description grammars, and a row with none, prompts of different lengths."""
    return [
        constrained(diagram("Start"), "Describe this diagram.", DESCRIPTION_EN),
        constrained(None, "Draw " * 30, MERMAID),
        constrained(diagram("Проверка", (300, 900)), "Опиши", DESCRIPTION_RU),
        constrained(None, "Hi", None, tokens=40, min_tokens=40),
        constrained(diagram("Ship"), "Describe", DESCRIPTION_ANY, tokens=200),
    ]


def test_every_constrained_answer_is_in_its_grammar_and_a_complete_one_parses(runtime):
    requests = mixed_constrained_requests()
    chunks = run_batch(runtime, requests)
    for index, item in enumerate(requests):
        if item.grammar is None:
            continue
        text, final = text_of(chunks[index]), chunks[index][-1]
        assert final.final
        assert accepts(runtime, item.grammar, text, complete=not final.cut_off), text
        if final.cut_off:
            assert sum(chunk.tokens for chunk in chunks[index]) == item.max_new_tokens
            continue
        if item.grammar == MERMAID:
            reading = graphs.from_mermaid(extract_mermaid(text))
            assert reading.graph.nodes and not reading.fields()["graph_notes"]["unsupported"], text
        else:
            reading = graphs.from_description(text)
            assert parsed(text, reading) and not reading.fields()["graph_notes"]["not_understood"], text


def test_with_constraints_a_batched_request_gets_exactly_what_it_gets_alone(runtime):
    requests = mixed_constrained_requests()
    together = run_batch(runtime, requests)
    for index, item in enumerate(requests):
        alone = run_batch(runtime, [item])[0]
        assert text_of(together[index]) == text_of(alone)
        assert together[index][-1].cut_off == alone[-1].cut_off


def test_the_row_without_a_grammar_gets_what_it_gets_in_a_batch_without_grammars(runtime):
    free = constrained(None, "Hi", None, tokens=40, min_tokens=40)
    with_grammars = run_batch(runtime, [constrained(diagram("Start"), "Describe", DESCRIPTION_EN), free])
    without = run_batch(runtime, [constrained(diagram("Start"), "Describe", None), free])
    assert text_of(with_grammars[1]) == text_of(without[1])


def test_a_batch_without_grammars_does_no_grammar_work(runtime):
    from describer.inference.runtime import DescriberRuntime

    fresh = DescriberRuntime(model=runtime.model, processor=runtime.processor, clip=runtime.clip, model_name="t")
    run_batch(fresh, [request(None, "Hi", max_new_tokens=8)])
    assert fresh._grammars is None  # not even the tokenizer's table was built


def test_the_grammar_wins_over_min_new_tokens(runtime):
    """A grammar that only allows "OK" ends the answer there, although 50 tokens were asked for."""
    compiled = runtime.grammars._compiler.compile_grammar('root ::= "OK"')
    limits = [RowLimits(max_new_tokens=60, min_new_tokens=50)]
    rows = RowConstraints([xgrammar.GrammarMatcher(compiled)], runtime.grammars.lines)
    inputs = runtime.prepare_inputs([request(None, "Say OK")])
    decoded = [item for step in runtime.decoder.decode([inputs], limits, constraints=rows) for item in step]
    tokens = [item.token for item in decoded]
    assert runtime.processor.tokenizer.decode(tokens, skip_special_tokens=True) == "OK"
    assert tokens[-1] in runtime.decoder.stack.eos_ids and decoded[-1].finished and not decoded[-1].cut_off
    assert len(tokens) < 50


def test_a_line_grown_too_long_is_made_to_end(runtime):
    """Past LONG_LINE_CHARS only the tokens that end the line stay allowed (of those the grammar
    allows: here the title's line break)."""
    matcher = runtime.grammars.matcher(DESCRIPTION_EN)
    rows = RowConstraints([matcher], runtime.grammars.lines)
    tokenizer = runtime.processor.tokenizer
    for token in tokenizer.encode("# " + "a" * (LONG_LINE_CHARS - 20), add_special_tokens=False):
        rows.accept(0, token)
    assert rows.line_length[0] == LONG_LINE_CHARS - 18
    free = allowed_tokens(rows.fill([0])[0], runtime.grammars.vocab_size)
    assert len(free) > 10  # before the bound: any text
    for token in tokenizer.encode("a" * 20, add_special_tokens=False):
        rows.accept(0, token)
    assert rows.line_length[0] == LONG_LINE_CHARS + 2
    closing = allowed_tokens(rows.fill([0])[0], runtime.grammars.vocab_size)
    assert closing and all("\n" in tokenizer.decode([token]) for token in closing)
    assert set(closing) < set(free)


def allowed_tokens(bitmask_row: torch.Tensor, vocab_size: int) -> list[int]:
    ids = torch.arange(vocab_size)
    return ids[((bitmask_row[ids // 32] >> (ids % 32).to(torch.int32)) & 1).bool()].tolist()


def test_without_the_fast_decoder_generate_decodes_under_the_grammar_too(runtime, monkeypatch):
    monkeypatch.setattr(runtime, "decoder", None)
    item = constrained(None, "Draw " * 10, MERMAID, tokens=120, min_tokens=30)
    chunks = run_batch(runtime, [item])[0]
    assert accepts(runtime, MERMAID, text_of(chunks), complete=not chunks[-1].cut_off)


def test_constrained_drawings_parse_in_the_browsers_mermaid(runtime):
    requests = [constrained(None, f"Draw process {index} " * (index + 1), MERMAID, tokens=400) for index in range(4)]
    chunks = run_batch(runtime, requests)
    codes = []
    for index in range(len(requests)):
        text, cut_off = text_of(chunks[index]), chunks[index][-1].cut_off
        codes.append(extract_mermaid(close_cut_off(text) if cut_off else text))
    with mermaid_drawer() as drawer:
        assert [drawer.parse_error(code) for code in codes] == [None] * len(codes), codes
        assert drawer.parse_error('flowchart TD\n  end["x"]') is not None  # the check can fail


# --- Cut off at the length limit ------------------------------------------------------------


def test_a_description_cut_off_mid_line_keeps_its_complete_lines(make_conversion):
    job = make_conversion(language="en")
    text = "# Order\n\n## Steps\n1. Receive the order\n2. Check the stock\n3. Ship the go"
    fields, _ = Describe().result(job, text, cut_off=True)
    steps = [node["label"] for node in fields["output_graph"]["nodes"] if node["kind"] == "task"]
    assert steps == ["Receive the order", "Check the stock"]
    assert complete_lines("no line break") == "no line break"  # a single unfinished line stays


def test_a_drawing_cut_off_mid_line_is_closed_and_parses(make_conversion):
    cut = 'flowchart LR\n  subgraph lane1 ["Sales"]\n    s1["Receive"]\n    s2["Check the st'
    assert close_cut_off(cut) == 'flowchart LR\n  subgraph lane1 ["Sales"]\n    s1["Receive"]\nend\n'
    assert close_cut_off("```mermaid\nflowchart TD\n  a --> b\n  b --") == "```mermaid\nflowchart TD\n  a --> b\n```\n"
    job = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="x")
    _, add_version = Draw().result(job, cut, cut_off=True)
    add_version()
    code = job.mermaid_versions.first().code
    reading = graphs.from_mermaid(code)
    assert [node.label for node in reading.graph.nodes] == ["Receive"] and not reading.fields()["graph_notes"]["unsupported"]


@pytest.fixture
def constrained_runner(runner, quick_generation):
    quick_generation.DESCRIBER_CONSTRAINED = True
    quick_generation.DESCRIBER_MIN_NEW_TOKENS = 0
    quick_generation.DESCRIBER_MAX_NEW_TOKENS = 120  # the random model is still writing then
    return runner


def test_a_job_cut_off_at_the_limit_says_so_on_its_page_and_in_the_api(constrained_runner, make_conversion, alice, user, client):
    make_conversion(language="en")
    job = run_next(constrained_runner)
    assert job.status == Conversion.Status.DONE, job.error_message
    assert job.cut_off and job.tokens_generated == 120
    assert accepts_text(constrained_runner.runtime, DESCRIPTION_EN, job.output_raw)
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "Cut off at the length limit" in page and "120 tokens" in page
    raw_token = api_token_create(user=user, name="t")[1]
    body = client.get(f"/api/v1/conversions/{job.pk}", HTTP_AUTHORIZATION=f"Bearer {raw_token}").json()
    assert body["cut_off"] is True


def accepts_text(runtime, grammar: str, text: str) -> bool:
    return runtime.grammars.matcher(grammar).accept_string(text)


def test_a_job_that_ends_is_not_marked_and_a_retry_clears_the_mark(make_conversion, alice):
    from describer import jobs

    job = make_conversion(language="en", status=Conversion.Status.FAILED, cut_off=True)
    assert "Cut off" not in alice.get(job.get_absolute_url()).content.decode()
    assert jobs.retry(job)
    job.refresh_from_db()
    assert not job.cut_off


def test_the_setting_decides_whether_jobs_are_constrained(runner, make_conversion, settings):
    from describer.pipeline import _Row

    describe, draw = make_conversion(language="ru"), make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="x")
    auto = make_conversion(language="")
    rows = [_Row(job, None, [], {}) for job in (describe, draw, auto)]
    settings.DESCRIBER_CONSTRAINED = True
    assert [runner._request(row).grammar for row in rows] == [DESCRIPTION_RU, MERMAID, DESCRIPTION_ANY]
    settings.DESCRIBER_CONSTRAINED = False
    assert [runner._request(row).grammar for row in rows] == [None, None, None]
