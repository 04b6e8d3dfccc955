"""The process graph as the result of both jobs: stored, shown, exported and returned by the API."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from describer import graphs, services
from describer.api.tokens import api_token_create
from describer.graph.model import ProcessGraph
from describer.graph.text import read_text
from describer.models import Conversion, MermaidVersion
from tests.conftest import run_next

pytestmark = pytest.mark.django_db

DESCRIPTION = """# Invoice approval

## Participants
- Accounting
- Manager

## Steps
1. Start: invoice received (Accounting)
2. Check the invoice (Accounting)
3. Amount over 1000? (Manager)
   - If yes: go to step 4.
   - If no: go to step 5.
4. Approve the invoice (Manager)
5. Pay the invoice (Accounting)
   - Next: end: Invoice paid.

## End states
- Invoice paid: the supplier has the money
"""


def finished_description(make_conversion, text: str = DESCRIPTION) -> Conversion:
    result = graphs.from_description(text, "en")
    return make_conversion(status="done", output_text=graphs.description_text(result.graph), **result.fields())


def test_a_finished_description_keeps_its_graph_and_the_text_is_rendered_from_it(runner, make_conversion, monkeypatch):
    from describer.describing import Describe

    job = make_conversion(language="en")
    fields, _ = Describe().result(job, DESCRIPTION + "\nSome chatter the model added.\n")

    graph = ProcessGraph.model_validate(fields["output_graph"])
    assert [node.kind for node in graph.nodes].count("decision") == 1
    assert [lane.name for lane in graph.lanes] == ["Accounting", "Manager"]
    # Text and graph agree: the shown text reads back into the same graph.
    assert read_text(fields["output_text"], "en").graph == graph
    assert fields["graph_notes"]["not_understood"] == ["Some chatter the model added."]


def test_a_step_reference_that_does_not_exist_is_reported(make_conversion):
    result = graphs.from_description(DESCRIPTION.replace("go to step 4.", "go to step 14."), "en")
    assert any("14" in problem for problem in result.notes["problems"])


def test_a_graph_over_the_size_limit_is_refused_naming_the_limit(settings):
    settings.GRAPH_MAX_NODES = 3
    result = graphs.from_description(DESCRIPTION, "en")
    assert result.graph is None
    assert "at most 3" in result.notes["problems"][0]


def test_the_worker_stores_a_graph_with_every_finished_description(runner, make_conversion):
    make_conversion()
    job = run_next(runner)
    assert job.status == Conversion.Status.DONE
    assert job.output_graph is not None  # the tiny model writes nonsense: a graph of what it could read
    assert "not_understood" in job.graph_notes


def test_every_mermaid_version_is_read_into_the_graph_with_the_lines_it_could_not_take(make_conversion):
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, status="done", input_text="x")
    services.mermaid_version_add(conversion, code="flowchart TD\n  a([Start]) --> b[Work]\n  b --> c([End])\n  b@{ shape: rect }",
                                 origin=MermaidVersion.Origin.EDIT)
    conversion.refresh_from_db()
    graph = ProcessGraph.model_validate(conversion.output_graph)
    assert [(node.id, node.kind) for node in graph.nodes] == [("a", "start"), ("b", "task"), ("c", "end")]
    assert [line for line, _ in conversion.graph_notes["unsupported"]] == [4]


@pytest.mark.parametrize(
    ("fmt", "content_type", "starts"),
    [
        ("markdown", "text/markdown; charset=utf-8", b"# Invoice approval"),
        ("json", "application/json", b"{"),
        ("mermaid", "text/plain; charset=utf-8", b"---\ntitle: \"Invoice approval\""),
        ("bpmn", "application/xml", b"<?xml"),
        ("svg", "image/svg+xml", b"<"),
        ("png", "image/png", b"\x89PNG"),
    ],
)
def test_a_description_downloads_in_every_format(alice, make_conversion, fmt, content_type, starts):
    conversion = finished_description(make_conversion)
    response = alice.get(f"/c/{conversion.pk}/download/?format={fmt}")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response.content.lstrip().startswith(starts)
    assert "attachment" in response["Content-Disposition"]


def test_an_unknown_format_or_a_missing_graph_is_a_404(alice, make_conversion):
    conversion = finished_description(make_conversion)
    assert alice.get(f"/c/{conversion.pk}/download/?format=docx").status_code == 404
    bare = make_conversion(status="done", output_text="# x")
    assert alice.get(f"/c/{bare.pk}/download/?format=bpmn").status_code == 404


@pytest.fixture
def api(user):
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='tests')[1]}")


def test_the_api_returns_the_graph_and_exports_by_format_or_accept(api, make_conversion):
    conversion = finished_description(make_conversion)
    body = api.get(f"/api/v1/conversions/{conversion.pk}").json()
    assert ProcessGraph.model_validate(body["graph"]) == ProcessGraph.model_validate(conversion.output_graph)

    by_query = api.get(f"/api/v1/conversions/{conversion.pk}/export?format=bpmn")
    by_accept = api.get(f"/api/v1/conversions/{conversion.pk}/export", HTTP_ACCEPT="application/bpmn+xml")
    assert by_query.status_code == by_accept.status_code == 200
    assert by_query.content == by_accept.content
    assert json.loads(api.get(f"/api/v1/conversions/{conversion.pk}/export").content)["title"] == "Invoice approval"
    refused = api.get(f"/api/v1/conversions/{conversion.pk}/export?format=docx")
    assert refused.status_code == 406 and refused["Content-Type"].startswith("application/problem+json")


def test_the_openapi_document_includes_the_graph_schema(client):
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert {"ProcessGraph", "Node", "Edge", "Lane", "Pool", "NodeKind"} <= set(schemas)


def test_the_result_page_draws_the_graph_beside_the_original_and_lists_what_was_not_understood(alice, make_conversion):
    result = graphs.from_description(DESCRIPTION + "\nBlah blah.\n", "en")
    conversion = make_conversion(status="done", output_text=graphs.description_text(result.graph),
                                 output_structure={"title": "Invoice approval", "steps": []}, **result.fields())
    page = alice.get(conversion.get_absolute_url()).content.decode()
    assert f"/c/{conversion.pk}/download/?format=svg" in page
    assert f'data-bpmn-url="/c/{conversion.pk}/download/?format=bpmn"' in page
    assert "1 line was not understood" in page and "Blah blah." in page
    assert "Edit as Mermaid" in page


def test_edit_as_mermaid_opens_the_graph_in_the_editor_at_once(alice, make_conversion):
    source = finished_description(make_conversion)
    response = alice.post(f"/c/{source.pk}/edit-as-mermaid/")
    drawing = Conversion.objects.get(source=source)
    assert response.status_code == 302 and response["Location"] == drawing.get_absolute_url()
    assert (drawing.status, drawing.kind, drawing.attempts) == ("done", "text_to_diagram", 0)
    [version] = drawing.mermaid_versions.all()
    assert version.origin == MermaidVersion.Origin.GRAPH
    assert ProcessGraph.model_validate(drawing.output_graph).nodes == ProcessGraph.model_validate(source.output_graph).nodes


def test_saving_mermaid_code_says_which_line_the_graph_could_not_take(alice, make_conversion):
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, status="done", input_text="x")
    code = "flowchart TD\n  a([Start]) --> b[Work]\n  b ~~~ c([End])"
    response = alice.post(f"/c/{conversion.pk}/mermaid/", {"code": code, "parse_error": ""}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Lines the process graph could not take" in html and "Line 3" in html


HOSTILE = 'Say "hi" <b>&amp; #quot; #35;\nline two 🚀 Согласовать'


def test_awkward_labels_survive_the_json_export_and_the_api(alice, api, make_conversion):
    from describer.graph.model import Edge, Node

    graph = ProcessGraph(title=HOSTILE, language="ru", nodes=[
        Node(id="a", kind="start", label=HOSTILE), Node(id="b", kind="end", label="Конец")],
        edges=[Edge(source="a", target="b", label=HOSTILE)])
    conversion = make_conversion(status="done", output_text="# x", output_graph=graph.model_dump(mode="json"))

    downloaded = alice.get(f"/c/{conversion.pk}/download/?format=json").content
    exported = api.get(f"/api/v1/conversions/{conversion.pk}/export?format=json").content
    read = api.get(f"/api/v1/conversions/{conversion.pk}").json()["graph"]
    for data in (json.loads(downloaded), json.loads(exported), read):
        assert ProcessGraph.model_validate(data) == graph
