"""Screenshots of the main pages at a desktop and a phone width, into docs/screenshots/.

    .venv/bin/python scripts/screenshots.py                      # or: make screenshots
    .venv/bin/python scripts/screenshots.py --out /tmp/shots

Self-contained and repeatable: it makes its own PostgreSQL database (SCREENSHOTS_DB, dropped and
made again each run) on the server the POSTGRES_* variables name, its own redis-server on a free
port, and a media folder in /tmp; migrates, imports the starter examples, creates a user and a
staff user, and builds the conversions the pages show through the worker's own functions
(describer/jobs.py, describer/describing.py, describer/drawing.py) with realistic texts, without a
model. Then daphne serves the site on a free port and headless Chromium (Playwright, CHROMIUM_PATH
or /usr/bin/chromium) logs in through the login form and saves `<page>-<width>.png`. Whatever it
started is stopped, and its database dropped, at the end.

A page that is not ready in time (a selector that changed, say) is shot anyway with a warning; a
page that answers with an error or the login form makes the run exit with status 1.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = os.environ.get("SCREENSHOTS_DB", "diagramsite_screenshots")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--font-render-hinting=none"]
PASSWORD = "screenshots-only-password-7251"
USER, STAFF = "maria", "admin"
WORKER = "gpu-1"
MODEL_NAME = "Qwen/Qwen2.5-VL-7B-Instruct"
WIDTHS = {1440: 900, 390: 844}
# A full-page shot is cut after this many screens: past that a page is reviewed by scrolling it.
MAX_SCREENS = 3
READY_TIMEOUT_MS = 15_000


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- The texts: what a model would have written ---------------------------------------------

REFUND_EN = """# Customer refund request

## Participants
- Customer
- Support agent
- Finance

## Steps
1. Start: refund requested (Customer)
2. Fill in the refund form with the order number (Customer)
3. Check the order and the reason for the refund (Support agent)
4. Bought within the last 30 days? (Support agent)
   - If yes: go to step 6.
   - If no: go to step 5.
5. Explain the refund policy to the customer (Support agent)
   - Next: end: Refund refused.
6. Item must be sent back? (Support agent)
   - If yes: go to step 7.
   - If no: go to step 9.
7. Send a prepaid return label (Support agent)
8. Ship the item back (Customer)
9. Amount over $500? (Finance)
   - If yes: go to step 10.
   - If no: go to step 11.
10. Get the finance manager's approval (Finance)
11. Refund to the original payment method (Finance)
12. Email the refund confirmation (Support agent)
   - Next: end: Refund paid.

## End states
- Refund refused (Customer): the customer keeps the item and no money is returned
- Refund paid (Customer): the money is back on the customer's card within 5 working days
"""

INVOICE_RU = """# Согласование счёта на оплату

## Участники
- Инициатор
- Руководитель отдела
- Финансовый директор
- Казначейство

## Шаги
1. Начало: получен счёт от поставщика (Инициатор)
2. Зарегистрировать счёт в системе документооборота (Инициатор)
3. Проверить сумму и реквизиты (Руководитель отдела)
4. Реквизиты верны? (Руководитель отдела)
   - Если да: перейти к шагу 6.
   - Если нет: перейти к шагу 5.
5. Запросить исправленный счёт у поставщика (Инициатор)
   - Далее: перейти к шагу 2.
6. Сумма больше 300 000 ₽? (Руководитель отдела)
   - Если да: перейти к шагу 7.
   - Если нет: перейти к шагу 9.
7. Рассмотреть счёт (Финансовый директор)
8. Счёт одобрен? (Финансовый директор)
   - Если да: перейти к шагу 9.
   - Если нет: конец: Счёт отклонён.
9. Включить счёт в реестр платежей (Казначейство)
10. Провести оплату (Казначейство)
11. Отправить платёжное поручение инициатору (Казначейство)
   - Далее: конец: Счёт оплачен.

## Конечные состояния
- Счёт отклонён (Финансовый директор): инициатор получает отказ с комментарием
- Счёт оплачен (Инициатор): платёжное поручение приложено к счёту
"""

# The live job has written this much of it so far (cut inside step 7).
GOODS_RECEIPT_EN = """# Receiving goods at the warehouse

## Participants
- Driver
- Warehouse clerk
- Quality control
- Accounting

## Steps
1. Start: truck arrives at the gate (Driver)
2. Hand over the delivery note (Driver)
3. Compare the delivery note with the purchase order (Warehouse clerk)
4. Quantities match? (Warehouse clerk)
   - If yes: go to step 6.
   - If no: go to step 5.
5. Record the difference in a discrepancy report (Warehouse clerk)
6. Inspect a sample of the goods (Quality control)
7. Goods damaged? (Quality control)
   - If yes: go to step 8.
   - If no: go to step 9.
8. Refuse the damaged pallets and return them with the truck (Driver)
9. Put the goods away and scan them into stock (Warehouse clerk)
10. Post the goods receipt (Accounting)
   - Next: end: Goods in stock.

## End states
- Goods in stock (Warehouse clerk): the stock and the supplier's invoice agree
"""
GOODS_RECEIPT_SO_FAR = GOODS_RECEIPT_EN[: GOODS_RECEIPT_EN.index("   - If yes: go to step 8.")] + "   - If yes: go to st"

TRIP_RU_TEXT = """Командировка сотрудника

Сотрудник заполняет заявку на командировку и указывает цель, даты и город. Руководитель рассматривает
заявку. Если бюджет поездки утверждён, отдел кадров оформляет приказ, а бухгалтерия выдаёт аванс;
если нет, заявка возвращается сотруднику на доработку. После поездки сотрудник сдаёт авансовый
отчёт с чеками, бухгалтерия проверяет его и закрывает командировку."""

# The model's drawing of it, with a typical slip: the decision on line 5 is never closed.
TRIP_RU_BROKEN = """flowchart TD
    A(["Сотрудник планирует командировку"]) --> B["Заполнить заявку: цель, даты, город"]
    B --> C["Рассмотреть заявку"]
    subgraph hr ["Отдел кадров"]
    C --> D{"Бюджет утверждён?"
    end
    D -->|"Да"| E["Оформить приказ"]
    D -->|"Нет"| B
    E --> F["Выдать аванс"]
    F --> G["Сдать авансовый отчёт с чеками"]
    G --> H["Проверить отчёт"]
    H --> I(["Командировка закрыта"])"""

CREDIT_RU_TEXT = """Выдача потребительского кредита

Клиент подаёт заявку в отделении или на сайте, заполняет анкету и прикладывает документы. Кредитный
менеджер принимает заявку и проверяет, полный ли комплект документов; если нет, запрашивает
недостающие, и клиент их дополняет. Служба безопасности проверяет паспорт по базе и кредитную
историю. Если найдены нарушения, материалы уходят в отдел рисков и клиенту отказывают; иначе служба
составляет заключение, а менеджер рассчитывает кредитный рейтинг. При рейтинге ниже 600 клиенту
сообщают об отказе, заявку сохраняют в архиве. Заявки больше 1 млн ₽ рассматривает кредитный
комитет; он устанавливает лимит и ставку. Менеджер готовит предложение; если клиент согласен, он
подписывает договор, бухгалтерия открывает счёт, зачисляет средства, составляет график платежей
и отправляет его клиенту."""

CREDIT_RU_MERMAID = """flowchart LR
    subgraph client ["Клиент"]
        c1(["Подать заявку"])
        c2["Заполнить анкету"]
        c3["Приложить документы"]
        c4["Дополнить документы"]
        c5["Подписать кредитный договор"]
        c6(["Кредит получен"])
        c7(["Заявка отозвана клиентом"])
    end
    subgraph manager ["Кредитный менеджер"]
        m1["Принять заявку"]
        m2{"Комплект документов полный?"}
        m3["Запросить недостающие документы"]
        m4["Рассчитать кредитный рейтинг"]
        m5{"Рейтинг не ниже 600?"}
        m6["Подготовить предложение"]
        m7["Сообщить клиенту об отказе"]
        m8["Сохранить заявку в архиве"]
        m9{"Клиент согласен с условиями?"}
        m10(["Отказ"])
    end
    subgraph security ["Служба безопасности"]
        s1["Проверить паспорт по базе"]
        s2["Проверить кредитную историю"]
        s3{"Найдены нарушения?"}
        s4["Передать материалы в отдел рисков"]
        s5["Составить заключение"]
    end
    subgraph committee ["Кредитный комитет"]
        k1{"Сумма больше 1 млн ₽?"}
        k2["Рассмотреть заявку на заседании"]
        k3{"Одобрено?"}
        k4["Установить лимит и ставку"]
    end
    subgraph accounting ["Бухгалтерия"]
        b1["Открыть счёт"]
        b2["Зачислить средства"]
        b3["Составить график платежей"]
        b4["Отправить график клиенту"]
    end
    c1 --> c2 --> c3 --> m1 --> m2
    m2 -->|"Да"| s1
    m2 -->|"Нет"| m3 --> c4 --> m2
    s1 --> s2 --> s3
    s3 -->|"Да"| s4 --> m7
    s3 -->|"Нет"| s5 --> m4 --> m5
    m5 -->|"Нет"| m7 --> m8 --> m10
    m5 -->|"Да"| k1
    k1 -->|"Да"| k2 --> k3
    k3 -->|"Нет"| m7
    k3 -->|"Да"| k4
    k1 -->|"Нет"| k4
    k4 --> m6 --> m9
    m9 -->|"Нет"| c7
    m9 -->|"Да"| c5 --> b1 --> b2 --> b3 --> b4 --> c6"""



def pasted(text: str) -> str:
    """The text as a user pastes it: one line a paragraph (the source wraps them for reading)."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


FAILED_ERROR = (
    "The conversion failed because of an internal error (OutOfMemoryError: CUDA out of memory. "
    "Tried to allocate 1.27 GiB; 0.94 GiB free)."
)
EXAMPLES_FOR_REFUND = {"bpmn-en-insurance-claim": 0.84, "bpmn-en-purchase-request": 0.79, "flow-en-expense-claim": 0.73}
# What few_shot_examples would pick for a drawing: starter examples with Mermaid code.
EXAMPLES_FOR_DRAWINGS = {"bpmn-ru-komandirovka": 0.0, "bpmn-ru-zakupka": 0.0}
EXAMPLES_FOR_INVOICE = {"bpmn-ru-zakupka": 0.86, "bpmn-ru-soglasovanie-dogovora": 0.81, "bpmn-ru-komandirovka": 0.7}


# --- Processes: the database, Redis and daphne of this run ------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def start(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen | None) -> None:
    """Stop a process this script started (its own session: daphne's children go with it)."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def start_redis(workdir: Path) -> tuple[subprocess.Popen | None, str]:
    """A redis-server of this run's own, without persistence; without one the site runs on
    without Redis (its cache misses and live updates pause), which the pages survive."""
    port = free_port()
    if shutil.which("redis-server") is None:
        warn("redis-server is not installed: the site runs without Redis")
        return None, f"redis://127.0.0.1:{port}/0"
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(workdir)]  # fmt: skip
    process = start(command, workdir / "redis.log")
    wait_for_port(port, process, "redis-server")
    return process, f"redis://127.0.0.1:{port}/0"


def postgres_params() -> dict:
    """The server that POSTGRES_* name, with settings.py's defaults."""
    return {
        "host": os.environ.get("POSTGRES_HOST", "127.0.0.1"), "port": os.environ.get("POSTGRES_PORT", "5432"),
        "user": os.environ.get("POSTGRES_USER", "postgres"), "password": os.environ.get("POSTGRES_PASSWORD", ""),
    }  # fmt: skip


def postgres(dbname: str = "postgres"):
    """An autocommit connection: to the maintenance database for CREATE and DROP DATABASE."""
    import psycopg

    return psycopg.connect(**postgres_params(), dbname=dbname, autocommit=True)


def drop_database() -> None:
    from psycopg import sql

    with postgres() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


def create_database() -> None:
    from psycopg import sql

    drop_database()
    with postgres() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with postgres(DATABASE) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS vector")


def start_daphne(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "diagramsite.asgi:application"]
    process = start(command, workdir / "daphne.log", env)
    wait_for_port(port, process, "daphne")
    return process, f"http://127.0.0.1:{port}"


def configure_environment(media: Path, redis_url: str) -> None:
    """This run's database, Redis and media, for Django here and for daphne (it inherits them)."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "diagramsite.settings",
        "POSTGRES_DB": DATABASE,
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": f"screenshots{secrets.token_hex(4)}",
        "MEDIA_ROOT": str(media),
        "DJANGO_DEBUG": "0",
        # Playwright's sync API runs an event loop in this thread; the ORM calls here are plain sync code.
        "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
    })  # fmt: skip
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("DESCRIBER_MODEL", None)  # the real model's name, so no page warns about the tiny one


# --- The data: users and conversions in every state the pages show -----------------------------
# Django's modules are imported inside the functions: the settings may be read only once
# configure_environment has named this run's database, Redis and media.


@dataclass
class Site:
    """What the shots need to know of the data: the paths of the conversions' pages."""

    pages: dict[str, str]


def pillow_photo() -> bytes:
    """A phone photo of a whiteboard sketch: greyish, slightly rotated, JPEG."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (1200, 800), (222, 224, 218))
    draw = ImageDraw.Draw(image)
    boxes = [(80, 320, 300, 440), (420, 300, 640, 460), (780, 320, 1000, 440)]
    for left, top, right, bottom in boxes:
        draw.rounded_rectangle((left, top, right, bottom), radius=18, outline=(30, 60, 140), width=6)
    for (_, top, right, bottom), (left, *_ignored) in zip(boxes, boxes[1:]):
        middle = (top + bottom) // 2
        draw.line((right, middle, left, middle), fill=(30, 60, 140), width=5)
        draw.polygon([(left, middle), (left - 24, middle - 12), (left - 24, middle + 12)], fill=(30, 60, 140))
    image = image.rotate(-3, resample=Image.BICUBIC, fillcolor=(90, 90, 90)).filter(ImageFilter.GaussianBlur(1.2))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def graph_of(text: str, language: str):
    from describer import graphs

    graph = graphs.from_description(text, language).graph
    if graph is None:
        raise RuntimeError(f"the screenshot text does not read as a process graph: {text[:40]!r}")
    return graph


def drawing_of(text: str, language: str) -> bytes:
    """The diagram a description describes, drawn by the site's own BPMN renderer."""
    from describer.graph.images import render_png

    return render_png(graph_of(text, language), scale=1.5)


def mermaid_pictures(texts: dict[str, tuple[str, str]]) -> dict[str, bytes]:
    """The diagrams of these descriptions drawn by Mermaid in Chromium, as the starter examples
    are (scripts/render_examples.py), so they look unlike the site's own drawing beside them.
    Falls back to that drawing where Mermaid fails."""
    from playwright.sync_api import sync_playwright

    from describer.graph.mermaid import render_mermaid
    from scripts.render_examples import SCALE, render

    pictures = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(device_scale_factor=SCALE, viewport={"width": 3000, "height": 2000})
        for name, (text, language) in texts.items():
            try:
                buffer = io.BytesIO()
                render(page, render_mermaid(graph_of(text, language))).save(buffer, format="PNG", optimize=True)
                pictures[name] = buffer.getvalue()
            except Exception as error:  # noqa: BLE001 - Mermaid's errors arrive as Playwright errors
                warn(f"Mermaid could not draw {name} ({str(error).splitlines()[0]}); using the BPMN drawing")
                pictures[name] = drawing_of(text, language)
        browser.close()
    return pictures


def upload(owner, content: bytes, filename: str, language: str = ""):
    from describer import services
    from describer.images import normalise_upload

    image = normalise_upload(content, filename)
    return services.conversion_create_from_image(owner=owner, image=image, original_filename=filename,
                                                 language=language)  # fmt: skip


def claimed(conversion):
    from describer import jobs

    [job] = jobs.claim(WORKER)
    if job.pk != conversion.pk:
        raise RuntimeError("another job was waiting in the screenshots database")
    jobs.start(job, WORKER)
    return job


def model_timings(tokens: int, generation_s: float) -> dict:
    first = round(0.9 + tokens / 2000, 2)
    return {"preprocessing_s": 0.21, "retrieval_s": 0.034, "first_token_s": first, "generation_s": generation_s,
            "tokens": tokens, "tokens_per_s": round(tokens / (generation_s - first), 1)}  # fmt: skip


def record_examples(job, examples: dict[str, float]) -> None:
    """The examples the prompt used, with their similarity (0: picked without an embedding)."""
    from describer.describing import record_examples_used
    from describer.models import Example

    found = list(Example.objects.filter(name__in=examples))
    for example in found:
        example.distance = 1 - examples[example.name]
    record_examples_used(job, sorted(found, key=lambda example: (example.distance, example.name)))


def describe_done(owner, text: str, image: bytes, filename: str, examples: dict[str, float], language: str = ""):
    """A diagram → text job run to its end as the worker finishes one, the model's text given."""
    from describer import jobs
    from describer.describing import Describe

    job = claimed(upload(owner, image, filename, language))
    describe = Describe()
    timings = model_timings(tokens=len(text) // 3, generation_s=round(len(text) / 160, 2))
    describe.reader.start(job, timings)  # the OCR stage, so the page shows how the text covers the labels
    record_examples(job, examples)
    fields, _ = describe.result(job, text)
    fields.update(output_raw=text, tokens_generated=timings["tokens"], timings=timings, model_name=MODEL_NAME)
    jobs.finish(job, WORKER, fields)
    job.refresh_from_db()
    return job


def draw_done(owner, text: str, code: str):
    """A text → diagram job finished with `code` as the model's answer."""
    from describer import jobs, services
    from describer.drawing import Draw

    job = claimed(services.conversion_create_from_text(owner=owner, text=pasted(text)))
    record_examples(job, EXAMPLES_FOR_DRAWINGS)
    fields, add_version = Draw().result(job, f"```mermaid\n{code}\n```")
    tokens = len(code) // 3
    fields.update(output_raw=code, tokens_generated=tokens, timings=model_timings(tokens, round(tokens / 38, 2)),
                  model_name=MODEL_NAME)  # fmt: skip
    jobs.finish(job, WORKER, fields, also=add_version)
    job.refresh_from_db()
    return job


def backdate(conversion, ago: timedelta, run_s: float = 0) -> None:
    """Move a conversion back in time, so that the history reads like weeks of use."""
    from django.utils import timezone

    from describer.models import Conversion, MermaidVersion

    created = timezone.now() - ago
    times = {"created_at": created, "queued_at": created}
    if conversion.claimed_at:
        times.update(claimed_at=created + timedelta(seconds=0.6), started_at=created + timedelta(seconds=0.8))
    if conversion.finished_at:
        times["finished_at"] = created + timedelta(seconds=0.8 + run_s)
    Conversion.objects.filter(pk=conversion.pk).update(**times)
    MermaidVersion.objects.filter(conversion=conversion).update(created_at=created + timedelta(seconds=0.8 + run_s))
    if conversion.timings:
        timings = {**conversion.timings, "queue_wait_s": 0.6}
        Conversion.objects.filter(pk=conversion.pk).update(timings=timings)


def starter_pair(name: str) -> tuple[bytes, str]:
    folder = ROOT / "examples" / "starter"
    return (folder / f"{name}.png").read_bytes(), (folder / f"{name}.txt").read_text(encoding="utf-8")


def make_finished(owner, pictures: dict[str, bytes]) -> dict[str, object]:
    refund = describe_done(owner, REFUND_EN, pictures["refund"], "refund-process.png", EXAMPLES_FOR_REFUND)
    invoice = describe_done(owner, INVOICE_RU, drawing_of(INVOICE_RU, "ru"), "согласование-счёта.png",
                            EXAMPLES_FOR_INVOICE)  # fmt: skip
    triage_image, triage_text = starter_pair("flow-en-bug-triage")
    triage = describe_done(owner, triage_text, triage_image, "bug_triage_v2.png", {})
    holiday_image, holiday_text = starter_pair("bpmn-ru-otpusk")
    holiday = describe_done(owner, holiday_text, holiday_image, "отпуск-схема.png", {"bpmn-ru-komandirovka": 0.77})
    for conversion, days in ((refund, 1), (invoice, 3), (triage, 9), (holiday, 16)):
        backdate(conversion, timedelta(days=days, hours=2), run_s=conversion.timings.get("generation_s", 8))
    return {"refund": refund, "invoice": invoice}


def make_drawings(owner, refund) -> dict[str, object]:
    from describer import services

    broken = draw_done(owner, TRIP_RU_TEXT, TRIP_RU_BROKEN)
    large = draw_done(owner, CREDIT_RU_TEXT, CREDIT_RU_MERMAID)
    edited = services.conversion_edit_as_mermaid(refund)
    backdate(broken, timedelta(minutes=50), run_s=9.5)
    backdate(large, timedelta(hours=5), run_s=21.0)
    backdate(edited, timedelta(hours=23))
    return {"broken": broken, "large": large}


def make_unfinished(owner, pictures: dict[str, bytes]):
    """A failed, a cancelled, a running and a queued job; returns the running one."""
    from describer import jobs
    from describer.models import Conversion, Worker

    failed = claimed(upload(owner, pillow_photo(), "IMG_20240611_whiteboard.jpg"))
    jobs.fail(failed, WORKER, FAILED_ERROR)
    reset_image, reset_text = starter_pair("flow-en-password-reset")
    cancelled = claimed(upload(owner, reset_image, "password-reset.png"))
    jobs.record_progress(cancelled, WORKER, reset_text[:180], 61)
    jobs.cancel(cancelled)
    Worker.objects.update_or_create(name=WORKER, defaults={
        "host": "gpu-node-1", "pid": 4242, "model_name": MODEL_NAME, "device": "cuda:0 (NVIDIA L4)",
        "batch_size": 4, "jobs_in_hand": 1,
    })  # fmt: skip
    running = claimed(upload(owner, pictures["goods-receipt"], "goods-receipt.png", "en"))
    jobs.record_progress(running, WORKER, GOODS_RECEIPT_SO_FAR, len(GOODS_RECEIPT_SO_FAR) // 3)
    queued_image, _ = starter_pair("bpmn-en-loan-application")
    upload(owner, queued_image, "loan-application.png")
    backdate(failed, timedelta(days=2, hours=5), run_s=3.1)
    backdate(cancelled, timedelta(days=6), run_s=4.0)
    Conversion.objects.filter(pk=running.pk).update(started_at=running.started_at - timedelta(seconds=38))
    return running


def embed_examples() -> None:
    """Embeddings as the worker would have made them (random unit vectors: nothing here searches
    by them), so the admin lists embedded examples; one is left pending and one failed."""
    import numpy as np
    from django.conf import settings

    from describer.models import EMBEDDING_DIMENSIONS, Example

    generator = np.random.default_rng(16)
    examples = list(Example.objects.order_by("name"))
    for example in examples[2:]:
        vector = generator.normal(size=EMBEDDING_DIMENSIONS)
        example.embedding, example.embedding_model = (vector / np.linalg.norm(vector)).tolist(), settings.CLIP_MODEL
    if len(examples) > 1:
        examples[1].embedding_error = "cannot identify image file (the file is truncated)"
    Example.objects.bulk_update(examples, ["embedding", "embedding_model", "embedding_error"])


def make_tokens(owner) -> None:
    from django.utils import timezone

    from describer.api.tokens import api_token_create
    from describer.models import ApiToken

    ci, _ = api_token_create(user=owner, name="CI pipeline", days=90)
    ApiToken.objects.filter(pk=ci.pk).update(last_used_at=timezone.now() - timedelta(hours=3))
    api_token_create(user=owner, name="Notebook experiments", days=None)


def seed() -> Site:
    """Migrate, import the starter examples, and make the users and their conversions."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import translation

    call_command("migrate", verbosity=0)
    call_command("import_examples", str(ROOT / "examples" / "starter"), verbosity=0)
    embed_examples()
    pictures = mermaid_pictures({"refund": (REFUND_EN, "en"), "goods-receipt": (GOODS_RECEIPT_EN, "en")})
    users = get_user_model().objects
    users.create_superuser(STAFF, email="admin@example.com", password=PASSWORD)
    owner = users.create_user(USER, email="maria@example.com", password=PASSWORD, first_name="Maria")
    translation.activate("en")
    finished = make_finished(owner, pictures)
    drawings = make_drawings(owner, finished["refund"])
    running = make_unfinished(owner, pictures)
    make_tokens(owner)
    pages = {
        "description": finished["refund"].get_absolute_url(),
        "description-ru": finished["invoice"].get_absolute_url(),
        "live": running.get_absolute_url(),
        "editor-error": drawings["broken"].get_absolute_url(),
        "editor-large": drawings["large"].get_absolute_url(),
    }
    return Site(pages=pages)


# --- The shots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    name: str
    path: str
    ready: str  # a CSS selector (a comma list matches any) that is there once the page is drawn
    who: str | None = USER  # None: not logged in
    what: str = ""


def shots(site: Site) -> list[Shot]:
    pages = site.pages
    return [
        Shot("login", "/accounts/login/", "form[action$='/login/'] button[type=submit]", None, "the login form"),
        Shot("history", "/", "#history-results", what="the history, every status"),
        Shot("upload", "/upload/", "#upload-form", what="the upload form"),
        Shot("live", pages["live"], "#live-text:not(:empty)", what="a description being written (running job)"),
        Shot("description", pages["description"], "article.description",
             what="a finished English description with its drawing, coverage and examples"),
        Shot("description-ru", pages["description-ru"], "article.description", what="a finished Russian one"),
        Shot("editor-error", pages["editor-error"], "#diagram[data-state=error], [data-error]:not([hidden])",
             what="the Mermaid editor with a parse error"),
        Shot("editor-large", pages["editor-large"], "#diagram[data-state=ok] svg, #diagram svg",
             what="the Mermaid editor with a 30-node diagram in 5 lanes"),
        Shot("settings", "/settings/", "#new-token, #api-tokens", what="settings with API tokens, one just made"),
        Shot("admin-examples", "/admin/describer/example/", "#result_list", STAFF,
             what="the admin's list of examples (staff)"),
    ]  # fmt: skip


def log_in(browser, base_url: str, username: str) -> dict:
    """The cookies of a session made through the real login form (django-axes sees the request)."""
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action$='/login/'] button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    state = context.storage_state()
    context.close()
    return state


# A function, not a string: the site's Content-Security-Policy forbids eval (wait_for_function uses it).
IMAGES_LOADED = """timeout => Promise.race([
  Promise.all(Array.from(document.images, img => img.complete ? null
    : new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); }))).then(() => true),
  new Promise(done => setTimeout(() => done(false), timeout)),
])"""


# True once the layout stops moving (widths, heights, positions, from offset*: transforms such as a
# spinner's do not count): an editor measures its wrapped lines a few frames after it is drawn.
LAYOUT_SETTLED = """async timeout => {
  const frames = () => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const layout = () => JSON.stringify([document.documentElement.scrollHeight,
    Array.from(document.querySelectorAll("body *"), e => [e.offsetTop, e.offsetHeight, e.offsetWidth])]);
  const end = Date.now() + timeout;
  let last = layout();
  while (Date.now() < end) {
    await frames();
    await new Promise(done => setTimeout(done, 200));
    const now = layout();
    if (now === last) return true;
    last = now;
  }
  return false;
}"""


# Scrolled through once, as a reader would: parts that measure or load only when in view
# (CodeMirror's wrapped lines and their gutter, lazy images) do so before a full-page shot.
SCROLL_THROUGH = """async () => {
  const pause = () => new Promise(done => setTimeout(done, 120));
  for (let y = 0; y < document.documentElement.scrollHeight; y += innerHeight / 2) {
    scrollTo(0, y);
    await pause();
  }
  scrollTo(0, 0);
  await pause();
}"""


def wait_ready(page, shot: Shot) -> None:
    """Network idle, the page's own element, fonts and images; a step that times out warns."""
    from playwright.sync_api import Error as PlaywrightError

    steps = [
        ("network idle", lambda: page.wait_for_load_state("networkidle", timeout=READY_TIMEOUT_MS)),
        (repr(shot.ready), lambda: page.wait_for_selector(shot.ready, state="visible", timeout=READY_TIMEOUT_MS)),
        ("lazy images", lambda: page.evaluate("document.querySelectorAll('img[loading=lazy]')"
                                              ".forEach(img => { img.loading = 'eager'; })")),
        ("images", lambda: page.evaluate(IMAGES_LOADED, READY_TIMEOUT_MS) or warn(f"{shot.name}: images not loaded")),
        ("fonts", lambda: page.evaluate("document.fonts.ready.then(() => true)")),
        ("scrolling", lambda: page.evaluate(SCROLL_THROUGH)),
        ("layout", lambda: page.evaluate(LAYOUT_SETTLED, 5_000) or warn(f"{shot.name}: the layout kept moving")),
    ]  # fmt: skip
    for what, step in steps:
        try:
            step()
        except PlaywrightError as error:
            warn(f"{shot.name}: {what} not ready: {str(error).splitlines()[0]}")


def problem_with(page, response, shot: Shot) -> str:
    if response is None:
        return f"{shot.name}: no response for {shot.path}"
    if response.status >= 400:
        return f"{shot.name}: {shot.path} answered {response.status}"
    if shot.who is not None and "/login/" in page.url:
        return f"{shot.name}: {shot.path} showed the login page"
    return ""


def before_shot(page, shot: Shot) -> None:
    """The settings page shows the once-shown box of a token made just now."""
    if shot.name == "settings":
        try:
            page.fill("#token-form input[name=name]", "Laptop script", timeout=5_000)
            page.click("#token-form button[type=submit]", timeout=5_000)
            page.wait_for_selector("#new-token", timeout=READY_TIMEOUT_MS)
            page.evaluate(LAYOUT_SETTLED, 3_000)
        except Exception as error:  # noqa: BLE001 - the page is shot as it stands
            warn(f"settings: could not create a token in the page: {str(error).splitlines()[0]}")


def after_shot(shot: Shot) -> None:
    if shot.name == "settings":  # the next width makes its own again
        from describer.models import ApiToken

        ApiToken.objects.filter(name="Laptop script").delete()


def save(page, path: Path, width: int, height: int) -> str:
    """Full page, up to MAX_SCREENS screens high (the rest is cut off); returns what was taken."""
    full = page.evaluate("Math.ceil(document.documentElement.scrollHeight)")
    if full <= height * MAX_SCREENS:
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return f"full page, {full} px"
    clip = {"x": 0, "y": 0, "width": width, "height": height * MAX_SCREENS}
    page.screenshot(path=str(path), full_page=True, clip=clip, animations="disabled")
    return f"first {MAX_SCREENS} screens of {full} px"


def take(browser, base_url: str, sessions: dict, shot: Shot, width: int, out: Path) -> tuple[str, str]:
    height = WIDTHS[width]
    context = browser.new_context(
        viewport={"width": width, "height": height}, locale="en-US", color_scheme="light",
        is_mobile=width < 800, has_touch=width < 800, storage_state=sessions.get(shot.who),
    )  # fmt: skip
    context.set_default_timeout(READY_TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: warn(f"{shot.name}-{width}: JavaScript: {error}"))
    try:
        response = page.goto(f"{base_url}{shot.path}")
        problem = problem_with(page, response, shot)
        wait_ready(page, shot)
        before_shot(page, shot)
        taken = save(page, out / f"{shot.name}-{width}.png", width, height)
        after_shot(shot)
        return taken, problem
    finally:
        context.close()


def shoot(base_url: str, site: Site, out: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    from playwright.sync_api import sync_playwright

    taken, problems = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            sessions = {USER: log_in(browser, base_url, USER), STAFF: log_in(browser, base_url, STAFF)}
            for shot in shots(site):
                for width in WIDTHS:
                    how, problem = take(browser, base_url, sessions, shot, width, out)
                    print(f"{shot.name}-{width}.png: {how}", flush=True)
                    taken.append((f"{shot.name}-{width}.png", shot.what, how))
                    if problem:
                        problems.append(problem)
        finally:
            browser.close()
    return taken, problems


def write_readme(out: Path, shots_taken: list[tuple[str, str, str]], seconds: float) -> None:
    rows = "\n".join(f"| `{name}` | {what} | {how} |" for name, what, how in shots_taken)
    text = f"""# Screenshots

The main pages at {" and ".join(f"{w}×{h}" for w, h in WIDTHS.items())} (CSS pixels, device scale 1;
the narrow one emulates a phone: mobile viewport, touch), light colour scheme, English interface.
Made by `scripts/screenshots.py` (about {math.ceil(seconds / 10) * 10} s):

```sh
make screenshots                                      # = .venv/bin/python scripts/screenshots.py
.venv/bin/python scripts/screenshots.py --out DIR     # somewhere else
```

The script makes its own PostgreSQL database (`{DATABASE}`, dropped at the end),
redis-server and media folder, imports the starter examples, creates the user `{USER}` and the
staff user `{STAFF}`, and builds the conversions through the worker's own functions with hand-written model answers
(no model runs): finished English and Russian descriptions, a running one with part of its text,
a failed, a cancelled and a queued one, and text → diagram drawings (one whose Mermaid code does
not parse, one with 30 nodes in 5 lanes). The uploaded pictures are Mermaid drawings of those
descriptions (made as `scripts/render_examples.py` makes the starter images), the site's own BPMN
drawing of one, starter example images, and a whiteboard "photo" drawn with Pillow. daphne serves
the site and headless Chromium logs in through the login form.

Each shot is the whole page when it is at most {MAX_SCREENS} screens high, else its first {MAX_SCREENS} screens.

| File | Page | Taken |
|---|---|---|
{rows}
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs")
    out = parser.parse_args().out.resolve()
    if not DATABASE.endswith("_screenshots"):  # it is dropped: never a database someone works in
        parser.error(f"SCREENSHOTS_DB must end in _screenshots, not {DATABASE!r}")
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="diagramsite-screenshots-"))
    redis = daphne = None
    database_made = False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops what was started
    try:
        redis, redis_url = start_redis(workdir)
        configure_environment(workdir / "media", redis_url)
        database_made = True  # from here on it is dropped, however far its making got
        create_database()
        import django

        django.setup()
        site = seed()
        print(f"data ready in {time.monotonic() - began:.0f} s", flush=True)
        daphne, base_url = start_daphne(workdir)
        taken, problems = shoot(base_url, site, out)
        write_readme(out, taken, time.monotonic() - began)
    except BaseException:
        log = workdir / "daphne.log"
        if log.exists():
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        stop(daphne)
        stop(redis)
        if database_made:
            close_and_drop()
        shutil.rmtree(workdir, ignore_errors=True)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(taken)} screenshots in {out} ({time.monotonic() - began:.0f} s)")
    return 1 if problems else 0


def close_and_drop() -> None:
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: BLE001 - Django may not have been set up
        pass
    drop_database()


if __name__ == "__main__":
    sys.exit(main())
