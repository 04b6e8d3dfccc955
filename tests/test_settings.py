"""diagramsite/settings.py: production values pass Django's deploy checks, and every
environment variable it reads is documented in README.md's configuration table."""

from __future__ import annotations

import ast
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "diagramsite" / "settings.py"
README = ROOT / "README.md"
ENV_HELPERS = {"envstr", "envbool", "envint", "envfloat", "envlist", "envfile"}

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://example.com",
    "DJANGO_HTTPS": "1",
    "DJANGO_HSTS_SECONDS": "31536000",
    "DJANGO_BEHIND_PROXY": "1",
}


def clean_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env.update(values)
    return env


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_python(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")


def variables_read_by_settings() -> set[str]:
    """Names passed to envstr/envbool/…("NAME"), os.environ.get("NAME"), os.getenv("NAME"), os.environ["NAME"]."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = ast.unparse(node.func)
            if function in ENV_HELPERS or function in ("os.environ.get", "os.getenv"):
                names.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
    return names


def configuration_table() -> set[str]:
    """Variable names in the first column of the table under '## Configuration'."""
    section = README.read_text().split("\n## Configuration", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    return set(re.findall(r"^\|\s*`([A-Z0-9_]+)`", section, flags=re.MULTILINE))


def test_deploy_check_passes_with_production_values():
    env = clean_env(DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    result = deploy_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_flags_the_development_defaults():
    result = deploy_check(clean_env())
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "security.W009" in output  # the built-in development secret key
    assert "security.W004" in output  # no HSTS


def test_it_reads_the_secret_key_from_a_file(tmp_path):
    key = secrets.token_urlsafe(50)
    key_file = tmp_path / "secret-key"
    key_file.write_text(key + "\n")
    result = run_python(clean_env(DJANGO_SECRET_KEY_FILE=str(key_file)), "-c",
                        "import diagramsite.settings as s; print(s.SECRET_KEY)")
    assert result.stdout.strip() == key, result.stderr


def test_a_secret_key_in_the_environment_wins_over_the_file(tmp_path):
    key_file = tmp_path / "secret-key"
    key_file.write_text("from-the-file")
    env = clean_env(DJANGO_SECRET_KEY="from-the-environment", DJANGO_SECRET_KEY_FILE=str(key_file))
    result = run_python(env, "-c", "import diagramsite.settings as s; print(s.SECRET_KEY)")
    assert result.stdout.strip() == "from-the-environment", result.stderr


def test_every_variable_in_settings_is_documented_in_the_readme():
    read = variables_read_by_settings()
    assert {"DJANGO_SECRET_KEY", "POSTGRES_TEST_DB", "CHANNELS_PREFIX", "MODEL_MAX_VRAM"} <= read
    documented = configuration_table()
    assert read - documented == set(), "add these to README.md's configuration table"
    assert documented - read == set(), "README.md documents variables that settings.py no longer reads"
