"""The Content-Security-Policy (django-csp) and Cache-Control: private.

Scripts run only from the site's own files: no inline scripts, event-handler
attributes or eval, in the templates or in our JavaScript. In headless Chromium the
pages that do the most (the Mermaid editor of a text → diagram result, and a live
progress page over daphne's WebSocket, ending in that editor) work under the policy
with no violation; and a control shows that the browser really enforces it.

Every response to a signed-in user is `Cache-Control: private`.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from django.urls import reverse

from describer import services
from describer.api.tokens import api_token_create
from describer.models import Conversion, MermaidVersion
from tests.browser import log_in
from tests.conftest import PASSWORD
from tests.processes import free_port, start_daphne, stop

ROOT = Path(__file__).resolve().parent.parent
CSP = "Content-Security-Policy"
FLOWCHART = """flowchart TD
    A(["Order received"]) --> B{"In stock?"}
    B -->|"Yes"| C["Ship it"]
    B -->|"No"| D(["Tell the customer"])"""


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in filter(None, (piece.strip() for piece in header.split(";"))):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def cache_control(response) -> set[str]:
    return {item.strip() for item in response.get("Cache-Control", "").split(",") if item.strip()}


# --- The header ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/login/", "/", "/text/", "/api/v1/docs"])
def test_every_page_has_the_policy(alice, url):
    assert CSP in alice.get(url, follow=True)


@pytest.mark.django_db
def test_scripts_come_only_from_the_site_itself(alice):
    policy = directives(alice.get(reverse("history"))[CSP])

    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert not any("'unsafe-eval'" in values or "'unsafe-inline'" in values
                   for name, values in policy.items() if name != "style-src")
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_styles_images_and_connections_allow_what_mermaid_and_the_websocket_need(alice):
    policy = directives(alice.get(reverse("history"))[CSP])

    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["img-src"] == ["'self'", "data:", "blob:"]
    assert policy["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]


@pytest.mark.django_db
def test_the_websocket_sources_follow_the_requests_host(client, settings):
    settings.ALLOWED_HOSTS = ["diagrams.example.com"]

    response = client.get("/accounts/login/", HTTP_HOST="diagrams.example.com:8443")

    connect = directives(response[CSP])["connect-src"]
    assert connect == ["'self'", "ws://diagrams.example.com:8443", "wss://diagrams.example.com:8443"]


@pytest.mark.django_db
def test_a_disallowed_host_gets_the_policy_without_websocket_sources(client):
    response = client.get("/accounts/login/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert directives(response[CSP])["connect-src"] == ["'self'"]


# --- Cache-Control ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_of_a_signed_in_user_are_private(alice, make_conversion):
    conversion = make_conversion()
    urls = [reverse("history"), reverse("upload"), reverse("text_new"), reverse("settings"),
            conversion.get_absolute_url(), reverse("image", args=[conversion.pk])]

    for url in urls:
        response = alice.get(url)
        assert response.status_code == 200, url
        assert "private" in cache_control(response), url
        assert "public" not in cache_control(response), url


@pytest.mark.django_db
def test_an_htmx_fragment_and_a_redirect_are_private_too(alice):
    fragment = alice.get(reverse("history"), {"q": "x"}, HTTP_HX_REQUEST="true")
    redirect = alice.get(reverse("login"))

    assert "private" in cache_control(fragment)
    assert redirect.status_code == 302 and "private" in cache_control(redirect)


@pytest.mark.django_db
def test_api_answers_to_a_token_are_never_public(user, client, make_conversion):
    # Shared caches keep no answer to a request with Authorization unless it says public (RFC 9111).
    raw = api_token_create(user=user, name="tests")[1]
    conversion = make_conversion()

    for url in ("/api/v1/conversions", f"/api/v1/conversions/{conversion.pk}", "/api/v1/nothing"):
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert not {"public", "s-maxage"} & {item.split("=")[0] for item in cache_control(response)}, url


@pytest.mark.django_db
def test_an_anonymous_page_stays_cacheable(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    assert "private" not in cache_control(response)


@pytest.mark.django_db
def test_static_files_stay_cacheable_for_a_signed_in_user(alice):
    static = alice.get("/static/css/site.css")

    assert static.status_code == 200
    assert "private" not in cache_control(static)


# --- Nothing in the sources that the policy would block --------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
HANDLER_ATTRIBUTE = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
EVAL_HTMX = re.compile(r"\shx-on[:-]|hx-vals=['\"]\s*js:|hx-headers=['\"]\s*js:|javascript:", re.IGNORECASE)
EVAL_JS = re.compile(r"\beval\(|new Function\(|\bFunction\(|set(?:Timeout|Interval)\(\s*['\"`]")


def our_files(folder: str, pattern: str) -> list[Path]:
    return sorted((ROOT / folder).rglob(pattern))


def test_no_template_has_inline_scripts_handlers_or_htmx_eval():
    found = []
    for path in our_files("templates", "*.html"):
        text = path.read_text()
        for pattern in (INLINE_SCRIPT, HANDLER_ATTRIBUTE, EVAL_HTMX):
            found += [f"{path.relative_to(ROOT)}: {match.group(0)}" for match in pattern.finditer(text)]
    assert found == []


def test_our_javascript_does_not_eval():
    found = [f"{path.name}: {match.group(0)}" for path in our_files("static/js", "*.js")
             for match in EVAL_JS.finditer(path.read_text())]
    assert found == []


def test_htmx_is_told_not_to_eval_nor_inject_styles():
    base = (ROOT / "templates" / "base.html").read_text()

    assert """<meta name="htmx-config" content='{"includeIndicatorStyles": false, "allowEval": false}'>""" in base
    assert base.index('name="htmx-config"') < base.index("htmx.min.js"), "read when htmx loads"
    assert ".htmx-request .htmx-indicator" in (ROOT / "static" / "css" / "site.css").read_text()


# --- In Chromium -----------------------------------------------------------------------------

REPORT_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} `
                        + `at ${event.sourceFile}:${event.lineNumber}`);
}, true);
document.addEventListener("htmx:wsAfterMessage", () => { window.__wsMessages = (window.__wsMessages || 0) + 1; });"""


@pytest.fixture
def violations(page) -> list[str]:
    """CSP violations as the page reports them (securitypolicyviolation events) and as
    Chromium logs them ("Refused to …"), across navigations."""
    found: list[str] = []
    page.expose_function("__cspViolation", lambda text: found.append(text))
    page.add_init_script(REPORT_VIOLATIONS)
    page.on("console", lambda message: found.append(message.text)
            if "Content Security Policy" in message.text or message.text.startswith("Refused to") else None)
    return found


def pump_until(page, predicate, *, what: str, timeout_ms: int = 5000) -> None:
    """Wait while Playwright delivers events (a plain sleep would hold its sync loop, and
    the page's reports with it)."""
    for _ in range(timeout_ms // 100):
        if predicate():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}")


def finished_drawing(make_conversion) -> Conversion:
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, status=Conversion.Status.DONE,
                                 title="Orders", input_text="Orders.")
    services.mermaid_version_add(conversion, code=FLOWCHART, origin=MermaidVersion.Origin.MODEL)
    return conversion


@pytest.mark.browser
@pytest.mark.django_db
def test_the_browser_enforces_the_policy(live_server, page, violations, user):
    """The control: inline code is refused and reported, so an empty list below means something."""
    log_in(page, live_server.url, user.username, PASSWORD)

    ran = page.evaluate("""() => {
      const script = document.createElement("script");
      script.textContent = "window.inlineRan = true";
      document.body.append(script);
      const button = document.createElement("button");
      button.setAttribute("onclick", "window.handlerRan = true");
      document.body.append(button);
      button.click();
      return [window.inlineRan, window.handlerRan];
    }""")

    assert ran == [None, None]
    def reported(directive: str) -> bool:
        return any(violation.startswith(f"{directive} blocked inline") for violation in violations)

    pump_until(page, lambda: reported("script-src-elem") and reported("script-src-attr"), what="both reports")


@pytest.mark.browser
@pytest.mark.django_db
def test_the_mermaid_editor_works_under_the_policy(live_server, page, page_errors, violations, user, make_conversion):
    conversion = finished_drawing(make_conversion)
    log_in(page, live_server.url, user.username, PASSWORD)

    response = page.goto(f"{live_server.url}{conversion.get_absolute_url()}")
    page.wait_for_selector("#diagram[data-state=ok]")
    assert directives(response.headers["content-security-policy"])["script-src"] == ["'self'"]
    assert "Ship it" in page.text_content(".diagram-preview svg")

    page.click(".cm-content")  # CodeMirror: typed, as a user does
    page.keyboard.press("Control+End")
    page.keyboard.insert_text('\n    C --> E(["Done"])')
    # Functions, not expression strings: Playwright evals those, and the policy forbids eval.
    page.wait_for_function("() => document.querySelector('.diagram-preview svg').textContent.includes('Done')")
    with page.expect_download() as png:
        page.click("button[data-export=png]")  # an SVG blob: drawn on a canvas
    assert open(png.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    page.click("[data-save-form] button[type=submit]")
    page.wait_for_selector("#version-2")

    assert violations == []
    assert page_errors == []


@pytest.mark.browser
@pytest.mark.django_db
def test_the_other_pages_work_under_the_policy(live_server, page, page_errors, violations, user, make_conversion):
    make_conversion(title="Order flow")
    make_conversion(title="Hiring", status=Conversion.Status.DONE)
    base = live_server.url
    log_in(page, base, user.username, PASSWORD)

    page.fill("input[name=q]", "Hiring")  # htmx: hx-trigger with a delay and a from: selector
    page.wait_for_function("() => document.querySelectorAll('#history-results tbody tr').length === 1")
    for path in ("/upload/", "/text/", "/settings/", "/api/v1/docs"):
        page.goto(f"{base}{path}")
    page.wait_for_selector("#swagger-ui .opblock")

    assert violations == []
    assert page_errors == []


@pytest.mark.browser
@pytest.mark.django_db
def test_the_admin_works_under_the_policy(live_server, page, page_errors, violations, staff_user, make_conversion):
    conversion = make_conversion(staff_user, title="Order flow")
    base = live_server.url
    log_in(page, base, staff_user.username, PASSWORD)

    page.goto(f"{base}/admin/describer/conversion/")
    page.check(f"input[name=_selected_action][value='{conversion.pk}']")  # actions.js counts the selection
    page.wait_for_selector(".action-counter:has-text('1 of 1')")
    for path in (f"/admin/describer/conversion/{conversion.pk}/change/", "/admin/describer/example/add/"):
        page.goto(f"{base}{path}")

    assert violations == []
    assert page_errors == []


# --- Live progress over daphne ---------------------------------------------------------------


def broadcast(conversion_id, event: dict) -> None:
    from describer.progress import Broadcaster

    broadcaster = Broadcaster()
    broadcaster.send(conversion_id, event)
    broadcaster.close()


def in_thread(function, *args) -> None:
    thread = threading.Thread(target=function, args=args)
    thread.start()
    thread.join(30)


@pytest.fixture
def site(tmp_path):
    port = free_port()
    server = start_daphne(port, tmp_path / "daphne.log", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    yield f"http://127.0.0.1:{port}"
    stop(server)
    print((tmp_path / "daphne.log").read_text()[-3000:])


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_live_progress_streams_and_ends_in_the_editor_under_the_policy(site, page, page_errors, violations, user):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())  # daphne's hashers
    user.save(update_fields=["password"])
    conversion = Conversion.objects.create(owner=user, kind=Conversion.Kind.TEXT_TO_DIAGRAM, title="Orders",
                                           input_text="Orders.", status=Conversion.Status.RUNNING,
                                           stage=Conversion.Stage.GENERATION)
    log_in(page, site, user.username, PASSWORD)
    page.goto(f"{site}{conversion.get_absolute_url()}")
    # The consumer's first message comes after it joined the conversion's group: events sent from now on arrive.
    page.wait_for_function("() => window.__wsMessages >= 1")

    # As the worker sends them; from a thread, since Playwright's sync API holds this one's loop.
    for end in (20, len(FLOWCHART)):
        in_thread(broadcast, conversion.id, {"type": "conversion.progress", "stage": "generation",
                                             "text": FLOWCHART[:end], "tokens": end, "elapsed": 1.0})
        page.wait_for_function("(end) => document.querySelector('#live-text').textContent.length === end", arg=end)
    Conversion.objects.filter(pk=conversion.pk).update(status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED)
    services.mermaid_version_add(conversion, code=FLOWCHART, origin=MermaidVersion.Origin.MODEL)
    in_thread(broadcast, conversion.id, {"type": "conversion.finished"})

    page.wait_for_selector("#diagram[data-state=ok]")
    assert "Ship it" in page.text_content(".diagram-preview svg")
    assert violations == []
    assert page_errors == []

