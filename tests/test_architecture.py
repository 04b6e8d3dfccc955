"""The web process never imports torch: only the worker loads describer/inference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

WEB_PROCESS = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")
from diagramsite.asgi import application  # what daphne loads
from django.urls import get_resolver

def walk(patterns):
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):
            walk(pattern.url_patterns)
        else:
            pattern.callback  # imports every view module

walk(get_resolver().url_patterns)
import describer.consumers, describer.admin, describer.api
heavy = [name for name in ("torch", "transformers", "sentence_transformers", "bitsandbytes") if name in sys.modules]
print("heavy:", heavy)
assert not heavy, heavy
"""


def test_the_web_process_never_imports_torch():
    result = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "heavy: []" in result.stdout


def test_only_the_inference_package_imports_torch():
    root = Path(__file__).resolve().parent.parent / "describer"
    torch_import = re.compile(r"^\s*(import torch|from torch\b)", re.MULTILINE)
    importing = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "inference" not in path.parts and torch_import.search(path.read_text())
    ]
    assert importing == []
