"""docker-compose.yml, the Dockerfile and the container entrypoint keep what the README promises.

The compose file is also validated by `scripts/check_compose.sh` (`make compose-check`);
these tests read its structure. The entrypoint tests run docker/entrypoint.sh against
the real test database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)([^}]*)\}")


def default_of(value: str) -> str:
    """`${NAME:-default}` → default: what a container sees when there is no .env file."""
    return INTERPOLATION.sub(lambda match: match.group(2).removeprefix(":-"), str(value))


def environment(service: str) -> dict[str, str]:
    return {name: default_of(value) for name, value in SERVICES[service]["environment"].items()}


def mounts(service: str) -> dict[str, str]:
    """Named volume → container path[:mode]."""
    return dict(entry.split(":", 1) for entry in SERVICES[service]["volumes"])


def dockerfile_env() -> dict[str, str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    values = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            values.update(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line))
    return values


def test_it_has_the_four_services_and_no_version_key():
    assert set(SERVICES) == {"db", "redis", "web", "worker"}
    assert "version" not in COMPOSE


def test_it_reserves_the_gpu_for_the_worker_only():
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name in ("db", "redis", "web"):
        assert "deploy" not in SERVICES[name]
    # The image must not hand the GPU to every container on hosts whose default runtime is nvidia.
    assert "NVIDIA_VISIBLE_DEVICES" not in dockerfile_env()
    assert dockerfile_env()["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_web_runs_daphne_on_port_8000_and_migrates():
    web = SERVICES["web"]
    assert web["command"] == ["daphne", "-b", "0.0.0.0", "-p", "8000", "diagramsite.asgi:application"]
    assert web["ports"] == ["8000:8000"]
    assert environment("web")["MIGRATE_ON_START"] == "1"
    assert web["healthcheck"]["test"] == ["CMD", "python", "docker/healthcheck.py"]


def test_worker_runs_the_describer_channel_without_migrating():
    worker = SERVICES["worker"]
    assert worker["command"] == ["python", "manage.py", "runworker", "describer-gpu"]
    assert environment("worker")["MIGRATE_ON_START"] == "0"
    # Healthy while its worker reports: `worker_alive` reads the worker's heartbeat row.
    assert worker["healthcheck"]["test"] == ["CMD", "python", "manage.py", "worker_alive"]
    assert worker["healthcheck"]["start_period"] in ("900s", 900)
    assert worker["image"] == SERVICES["web"]["image"]


def test_db_uses_the_pgvector_image_and_the_apps_credentials():
    db = SERVICES["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert SERVICES["redis"]["image"].startswith("redis:")
    assert "redis-cli" in SERVICES["redis"]["healthcheck"]["test"]
    db_env = {name: default_of(value) for name, value in db["environment"].items()}
    for service in ("web", "worker"):
        app_env = environment(service)
        assert app_env["POSTGRES_HOST"] == "db"
        assert app_env["REDIS_URL"].startswith("redis://redis:")
        for name in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
            assert app_env[name] == db_env[name]


def test_apps_wait_for_healthy_db_and_redis_and_the_worker_for_the_web():
    healthy = {"condition": "service_healthy"}
    assert SERVICES["web"]["depends_on"] == {"db": healthy, "redis": healthy}
    assert SERVICES["worker"]["depends_on"] == {"db": healthy, "redis": healthy, "web": {"condition": "service_started"}}


def test_media_volume_is_mounted_at_media_root():
    media_root = dockerfile_env()["MEDIA_ROOT"]
    assert environment("web")["MEDIA_ROOT"] == environment("worker")["MEDIA_ROOT"] == media_root
    assert mounts("web")["media"] == media_root
    # The worker only reads the uploads.
    assert mounts("worker")["media"] == f"{media_root}:ro"
    # The generated secret key lives in the media volume, readable by both.
    assert dockerfile_env()["DJANGO_SECRET_KEY_FILE"].startswith(media_root + "/")


def test_model_cache_volume_is_the_hugging_face_home_of_the_worker():
    hf_home = dockerfile_env()["HF_HOME"]
    assert environment("worker")["HF_HOME"] == hf_home
    assert mounts("worker")["model-cache"] == hf_home
    assert "model-cache" not in mounts("web")
    assert dockerfile_env()["TINY_MODELS_DIR"].startswith(hf_home + "/")
    assert set(COMPOSE["volumes"]) == {"pgdata", "media", "model-cache", "adapters"}


def test_adapters_volume_is_written_by_the_worker_and_read_by_the_web():
    adapters_dir = environment("worker")["ADAPTERS_DIR"]
    assert environment("web")["ADAPTERS_DIR"] == adapters_dir
    # The worker's finetune writes versions, and the worker merges each once into its folder.
    assert mounts("worker")["adapters"] == adapters_dir
    # The admin only checks an adapter before making it active.
    assert mounts("web")["adapters"] == f"{adapters_dir}:ro"


def test_the_model_memory_defaults_suit_an_8_gb_gpu():
    worker_env = environment("worker")
    assert worker_env["MODEL_MAX_VRAM"] == "7GiB"
    assert worker_env["MODEL_QUANTIZATION"] == "nf4"
    assert worker_env["DESCRIBER_MODEL"] == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_every_variable_has_a_default_and_is_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    used = INTERPOLATION.findall(text)
    assert used
    assert [name for name, rest in used if not rest.startswith(":-")] == []
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert {name for name, _ in used} <= documented


def test_the_image_pins_the_same_torch_as_the_requirements():
    requirements = (ROOT / "requirements.txt").read_text()
    for package in ("torch", "torchvision"):
        pin = re.search(rf"^{package}==(\S+)$", requirements, flags=re.MULTILINE).group(1)
        assert f"{package}=={pin}" in DOCKERFILE
    # torch is installed before the rest of the requirements (its own cached layer).
    assert DOCKERFILE.index("torch==") < DOCKERFILE.index("-r requirements.txt")


def test_the_image_runs_as_a_non_root_user_with_static_files_collected():
    user_lines = [line for line in DOCKERFILE.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1] not in ("USER root", "USER 0", "USER 0:0")
    assert "collectstatic --noinput" in DOCKERFILE
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in DOCKERFILE
    assert os.access(ROOT / "docker" / "entrypoint.sh", os.X_OK)


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env", "staticfiles"} <= ignored
    assert not ignored & {"docker", "locale", "static", "templates", "examples"}


# --- docker/entrypoint.sh against the real test database -------------------------------


@pytest.fixture
def container_env(django_db_setup, tmp_path):
    """The environment a container would have, pointing at the test database."""
    from django.db import connection

    media = tmp_path / "media"
    media.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "PYTEST"))}
    db = connection.settings_dict
    env.update(
        POSTGRES_DB=db["NAME"],
        POSTGRES_HOST=db["HOST"] or "127.0.0.1",
        POSTGRES_PORT=str(db["PORT"] or 5432),
        POSTGRES_USER=db["USER"],
        POSTGRES_PASSWORD=db["PASSWORD"] or "",
        MEDIA_ROOT=str(media),
        DJANGO_SECRET_KEY_FILE=str(media / ".django-secret-key"),
        IMPORT_EXAMPLES_ON_START="0",
        WAIT_FOR_DB_SECONDS="3",
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
    )
    return env


def run_entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "docker" / "entrypoint.sh"), *command],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


PRINT_SECRET_KEY = "import diagramsite.settings as s; print(s.SECRET_KEY)"


def test_the_web_entrypoint_generates_and_keeps_a_secret_key(container_env):
    web_env = {**container_env, "MIGRATE_ON_START": "1"}
    first = run_entrypoint(web_env, "python", "-c", PRINT_SECRET_KEY)
    assert first.returncode == 0, first.stderr
    key_file = Path(container_env["DJANGO_SECRET_KEY_FILE"])
    key = key_file.read_text().strip()
    assert len(key) >= 50
    assert key_file.stat().st_mode & 0o077 == 0
    assert first.stdout.strip().splitlines()[-1] == key
    second = run_entrypoint(web_env, "python", "-c", PRINT_SECRET_KEY)
    assert second.stdout.strip().splitlines()[-1] == key


def test_the_worker_entrypoint_starts_once_migrations_are_applied(container_env):
    started = run_entrypoint({**container_env, "MIGRATE_ON_START": "0"}, "echo", "worker started")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().endswith("worker started")


def test_the_entrypoint_says_which_database_it_waits_for(container_env):
    unreachable = {**container_env, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1", "WAIT_FOR_DB_SECONDS": "0"}
    result = run_entrypoint(unreachable, "echo", "never")
    assert result.returncode == 1
    assert "never" not in result.stdout
    assert "gave up waiting for PostgreSQL at 127.0.0.1:1" in result.stderr


def test_every_debian_package_of_the_image_is_installed_by_make_test_too():
    import re

    installed_in_image = set()
    for command in re.findall(r"apt-get install ([^&\n]+)", DOCKERFILE.replace("\\\n", " ")):
        installed_in_image.update(word for word in command.split() if not word.startswith("-"))
    scripts = " ".join(path.read_text() for path in (ROOT / "scripts").glob("*.sh"))
    assert installed_in_image, "the Dockerfile installs Debian packages"
    assert {package for package in installed_in_image if package not in scripts} == set()
