"""Shared fixtures: users, logged-in clients, generated images, tiny models.

Everything is real: PostgreSQL with pgvector, Redis, the tiny models built by
`make_tiny_models`, headless Chromium for pages.
"""

from __future__ import annotations

import io
import os
import uuid

# Runs before Django reads its settings: keep this run's Redis keys apart from
# other runs on the same machine.
os.environ.setdefault("CHANNELS_PREFIX", f"dstest{uuid.uuid4().hex[:8]}")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("DESCRIBER_POLL_SECONDS", "1")
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

import pytest  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from PIL import Image  # noqa: E402

pytest_plugins = ["tests.browser"]

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def default_language():
    """A request in another language leaves it active in the thread (LocaleMiddleware
    never deactivates); start every test in the default language."""
    from django.utils import translation

    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def media_root(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The production hasher takes ~0.4 s a password on CI; tests create users by the hundred.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("mallory", password=PASSWORD)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", password=PASSWORD)


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def no_ocr(settings):
    """Pages without the label boxes of the OCR stage (it needs Tesseract and time)."""
    settings.DESCRIBER_OCR = False


def png_bytes(size=(320, 200), mode="RGB", color="white", fmt="PNG", **save_args) -> bytes:
    image = Image.new(mode, size, color)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def diagram_png(text: str = "Start", size=(640, 400)) -> bytes:
    """A small box-and-arrow picture, so CLIP and the VLM see some structure."""
    from PIL import ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 240, 120), outline="black", width=3)
    draw.text((60, 70), text, fill="black")
    draw.line((240, 80, 400, 80), fill="black", width=3)
    draw.rectangle((400, 40, 600, 120), outline="black", width=3)
    draw.text((420, 70), "End", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_conversion(user):
    """Create a conversion row directly (no worker involved)."""
    from describer.models import Conversion

    def make(owner=None, *, kind=Conversion.Kind.DIAGRAM_TO_TEXT, image=True, **fields):
        conversion = Conversion(owner=owner or user, kind=kind, **fields)
        if image and kind == Conversion.Kind.DIAGRAM_TO_TEXT:
            content = diagram_png()
            conversion.input_image.save("diagram.png", ContentFile(content), save=False)
            conversion.input_thumbnail.save("thumb.jpg", ContentFile(content), save=False)
        conversion.save()
        return conversion

    return make


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """The tiny random models, built once per run by the project's own command."""
    from django.core.management import call_command

    directory = settings.TINY_MODELS_DIR if os.environ.get("TINY_MODELS_DIR") else tmp_path_factory.mktemp("tiny")
    call_command("make_tiny_models", str(directory), verbosity=0)
    return directory


@pytest.fixture(scope="session")
def tiny_paths(tiny_models_dir):
    from describer.inference.tiny import tiny_model_paths

    return tiny_model_paths(tiny_models_dir)


# Small images keep the runtime-level tests fast on the CPU.
SMALL_IMAGE_PIXELS = 256 * 28 * 28


@pytest.fixture(scope="session")
def small_image_runtime(tiny_paths):
    """The runtime assembled from the production loaders' parts, with small images."""
    from describer.inference.loading import load_clip, load_vlm
    from describer.inference.runtime import DescriberRuntime

    model, processor = load_vlm(
        str(tiny_paths.vlm), max_vram="7GiB", max_ram="16GiB", quantization="nf4", cache_dir="",
        max_pixels=SMALL_IMAGE_PIXELS,
    )
    clip = load_clip(str(tiny_paths.clip), cache_dir="")
    return DescriberRuntime(model=model, processor=processor, clip=clip, model_name="tiny", is_tiny=True)


@pytest.fixture(scope="session")
def tiny_runtime(tiny_models_dir):
    """The real runtime, loaded through the production code from the tiny models' paths."""
    from describer.inference.runtime import DescriberRuntime
    from describer.inference.tiny import tiny_model_paths

    paths = tiny_model_paths(tiny_models_dir)
    return DescriberRuntime.load(paths.vlm, paths.clip, max_pixels=settings.DESCRIBER_MAX_PIXELS)


@pytest.fixture
def quick_generation(settings):
    """Short, forced-length outputs from the tiny model, streamed in small steps. Unconstrained:
    48 tokens of a random model under the layout's grammar rarely get past the title line, and
    these tests are about the jobs; tests/test_constrained.py runs jobs under the grammars."""
    settings.DESCRIBER_CONSTRAINED = False
    settings.DESCRIBER_MIN_NEW_TOKENS = 48
    settings.DESCRIBER_MAX_NEW_TOKENS = 48
    settings.DESCRIBER_STREAM_INTERVAL_MS = 5
    return settings


@pytest.fixture
def runner(tiny_runtime, quick_generation):
    """The worker's job runner in-process, on the tiny models."""
    from describer.pipeline import JobRunner
    from describer.progress import Broadcaster

    broadcaster = Broadcaster()
    yield JobRunner(tiny_runtime, broadcaster)
    broadcaster.close()


def run_next(runner):
    """Claim the oldest queued job and run it to its end, as the worker would."""
    from describer.jobs import claim

    [job] = claim("test")
    runner.run(job)
    job.refresh_from_db()
    return job
