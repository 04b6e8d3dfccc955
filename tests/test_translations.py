"""The interface is complete in English and Russian: every string marked for
translation has a Russian translation, and the compiled catalogue is current."""

from __future__ import annotations

import ast
import gettext
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "locale" / "ru" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
SOURCE_DIRS = ["describer", "diagramsite", "templates"]


def po_entries(path: Path) -> dict[str, tuple[str, bool]]:
    """msgid → (msgstr, fuzzy) for a .po file; plural forms count as translated
    when every form is filled in."""
    entries: dict[str, tuple[str, bool]] = {}
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith("#~")]
        fuzzy = any(line.startswith("#,") and "fuzzy" in line for line in lines)
        msgid, msgstrs, current = [], [], None
        for line in lines:
            if line.startswith("msgid "):
                current = msgid
            elif line.startswith("msgid_plural"):
                current = None
            elif line.startswith("msgstr"):
                current = []
                msgstrs.append(current)
            elif line.startswith("#") or line.startswith("msgctxt"):
                continue
            if current is not None and '"' in line:
                # A C-style string literal ("a \"quoted\" word"): Python reads it the same way.
                current.append(ast.literal_eval(line[line.index('"') :]))
        key = "".join(msgid)
        if key:
            translated = all("".join(parts) for parts in msgstrs) and bool(msgstrs)
            entries[key] = ("x" if translated else "", fuzzy)
    return entries


def test_every_message_has_a_russian_translation():
    untranslated = [msgid for msgid, (msgstr, fuzzy) in po_entries(PO).items() if not msgstr or fuzzy]
    assert not untranslated, f"{len(untranslated)} untranslated or fuzzy: {untranslated[:10]}"


def test_the_catalogue_holds_every_string_of_the_source(tmp_path):
    for name in SOURCE_DIRS:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "migrations"))
    shutil.copy(ROOT / "manage.py", tmp_path)
    (tmp_path / "locale").mkdir()
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "ru", "--no-location", "--no-obsolete", "-v", "0"],
        cwd=tmp_path,
        check=True,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "diagramsite.settings"},
    )
    fresh = set(po_entries(tmp_path / "locale" / "ru" / "LC_MESSAGES" / "django.po"))
    committed = set(po_entries(PO))
    missing = sorted(fresh - committed)
    assert not missing, f"run `make messages` and translate: {missing[:10]}"


def test_the_compiled_catalogue_matches_the_translations():
    catalogue = gettext.GNUTranslations(MO.open("rb"))
    compiled = set(catalogue._catalog)  # noqa: SLF001 - the simplest full listing
    missing = [msgid for msgid in po_entries(PO) if msgid not in compiled and (msgid, 0) not in compiled]
    assert not missing, f"run `make messages`: {missing[:10]}"


@pytest.mark.django_db
def test_the_login_page_speaks_russian(client):
    response = client.get("/accounts/login/", headers={"Accept-Language": "ru"})
    assert "Войти" in response.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_live_progress_speaks_the_language_of_the_page(client, make_conversion, user):
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from diagramsite.asgi import application

    conversion = await database_sync_to_async(make_conversion)()
    await database_sync_to_async(client.force_login)(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = f"{settings.SESSION_COOKIE_NAME}={session}; {settings.LANGUAGE_COOKIE_NAME}=ru"
    comm = WebsocketCommunicator(
        application,
        f"/ws/conversions/{conversion.id}/",
        headers=[(b"origin", b"http://localhost"), (b"cookie", cookie.encode())],
    )
    connected, _ = await comm.connect()
    assert connected
    html = await comm.receive_from(timeout=5)
    await comm.disconnect()
    assert "Ожидание в очереди" in html  # "Waiting in the queue: position 1."
    assert "Waiting" not in html
