"""Settings for diagramsite: one file, every knob an environment variable.

Every variable read here is documented in README.md ("Configuration").
Defaults suit a developer machine; production sets DJANGO_SECRET_KEY,
DJANGO_DEBUG=0, DJANGO_ALLOWED_HOSTS and the database/Redis addresses.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


def envfile(name: str) -> str:
    """The stripped contents of the file named by variable NAME, or "" (Docker-secrets style)."""
    path = envstr(name, "")
    return Path(path).read_text().strip() if path and Path(path).is_file() else ""


# --- Core -------------------------------------------------------------------
# The Docker image writes a random key to DJANGO_SECRET_KEY_FILE on first start.
SECRET_KEY = (
    envstr("DJANGO_SECRET_KEY", "")
    or envfile("DJANGO_SECRET_KEY_FILE")
    # The "django-insecure-" prefix makes `check --deploy` flag it (security.W009).
    or "django-insecure-dev-only-key-change-me-in-production-0123456789"
)
DEBUG = envbool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", "")
SITE_NAME = "diagramsite"

INSTALLED_APPS = [
    # describer first: its runworker command wraps Channels' one.
    "describer",
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_htmx",
    "axes",
    # django-ninja (the JSON API): listed so its docs page uses its bundled Swagger UI, not a CDN.
    "ninja",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy (CONTENT_SECURITY_POLICY below), plus the host's ws:/wss: addresses.
    "describer.middleware.ContentSecurityPolicyMiddleware",
    # Static files from daphne itself (htmx, mermaid, css): no separate file server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Cache-Control: private on every response to a signed-in user.
    "describer.middleware.PrivateCacheMiddleware",
    # Every page needs a session unless its view says @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "describer.middleware.HtmxLoginRedirectMiddleware",
    # AxesMiddleware should be the last one.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "diagramsite.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "diagramsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "describer.context_processors.site",
            ],
        },
    },
]

# --- Database (PostgreSQL with pgvector) ---------------------------------------
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": envstr("POSTGRES_DB", "diagramsite"),
        "USER": envstr("POSTGRES_USER", "postgres"),
        "PASSWORD": envstr("POSTGRES_PASSWORD", ""),
        "HOST": envstr("POSTGRES_HOST", "127.0.0.1"),
        "PORT": envstr("POSTGRES_PORT", "5432"),
        "CONN_MAX_AGE": envint("POSTGRES_CONN_MAX_AGE", 0),
        # pgvector >= 0.8: an HNSW scan keeps looking past rows that filters (or dead
        # tuples) drop, so `nearest(k)` still returns k rows when k exist.
        "OPTIONS": {"options": "-c hnsw.iterative_scan=strict_order"},
        # Lets parallel test runs use their own database.
        "TEST": {"NAME": os.environ.get("POSTGRES_TEST_DB") or None},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache ------------------------------------------------
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": envstr("CHANNELS_PREFIX", "diagramsite"),
            "expiry": 60,
            "capacity": 200,
        },
    }
}
# An unreachable Redis is a cache miss, not an error (describer/cache.py); the short
# timeouts keep a Redis that does not answer from stalling every page.
REDIS_CACHE_TIMEOUT_S = envfloat("REDIS_CACHE_TIMEOUT_S", 0.5)
CACHES = {
    "default": {
        "BACKEND": "describer.cache.FailSafeRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": envstr("CHANNELS_PREFIX", "diagramsite"),
        "OPTIONS": {"socket_connect_timeout": REDIS_CACHE_TIMEOUT_S, "socket_timeout": REDIS_CACHE_TIMEOUT_S},
    }
}

# --- Accounts ----------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sessions are read from Redis on every request and kept in PostgreSQL as well;
# while Redis is down they are read from PostgreSQL (the cache answers misses).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "history"
LOGOUT_REDIRECT_URL = "login"
SIGNUP_ENABLED = envbool("SIGNUP_ENABLED", False)

# Login throttling (django-axes): lock a username+IP pair after N failures.
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = envfloat("LOGIN_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
# Behind N reverse proxies the last one is REMOTE_ADDR and each appends the address it saw to
# X-Forwarded-For, so the client is the N-th address from the right; anything left of it the
# client could have written itself. django-ipware counts only the proxies listed in the header
# (N - 1), and non-strict so that a client's own X-Forwarded-For in front is skipped, not trusted.
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 0)
AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT - 1 if TRUSTED_PROXY_COUNT > 0 else None
AXES_IPWARE_PROXY_ORDER = "left-most"
# Without a proxy X-Forwarded-For is whatever the client wrote: only the socket's address counts.
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if TRUSTED_PROXY_COUNT > 0 else ("REMOTE_ADDR",)
)
IPWARE_STRICT = False
AXES_VERBOSE = False

# --- Internationalisation ----------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ru", _("Russian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = envstr("TIME_ZONE", "UTC")
# One way to write a date on every page (diagramsite/formats/<language>/formats.py).
FORMAT_MODULE_PATH = ["diagramsite.formats"]
USE_I18N = True
USE_TZ = True

# --- Static and media ------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# collectstatic output in Docker; straight from static/ elsewhere (tests, development).
WHITENOISE_USE_FINDERS = True
# Media is private: files are only served through views that check the owner.
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/private-media/"

# --- Uploads -----------------------------------------------------------------------
UPLOAD_MAX_BYTES = envint("UPLOAD_MAX_BYTES", 10 * 1024 * 1024)
UPLOAD_MAX_PIXELS = envint("UPLOAD_MAX_PIXELS", 40_000_000)
# Django refuses bigger request bodies outright; leave room for the form fields.
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
TEXT_INPUT_MAX_CHARS = envint("TEXT_INPUT_MAX_CHARS", 20_000)
HISTORY_PAGE_SIZE = envint("HISTORY_PAGE_SIZE", 20)

# --- JSON API (/api/v1/) ---------------------------------------------------------------
# Conversions one API token may create a minute; 0 turns the limit off.
API_JOBS_PER_MINUTE = envint("API_JOBS_PER_MINUTE", 30)
# Days a new API token is valid unless its maker chooses otherwise; 0 = it never expires.
API_TOKEN_DEFAULT_DAYS = envint("API_TOKEN_DEFAULT_DAYS", 90)

# --- Models and the GPU worker ------------------------------------------------------
# "tiny" selects the tiny random models that `make_tiny_models` builds (they write nonsense).
DESCRIBER_MODEL = envstr("DESCRIBER_MODEL", "Qwen/Qwen2.5-VL-3B-Instruct")
CLIP_MODEL = envstr("CLIP_MODEL", "clip-ViT-B-32")
TINY_MODELS_DIR = Path(envstr("TINY_MODELS_DIR", str(BASE_DIR / "var" / "tiny-models")))
MODEL_CACHE_DIR = envstr("MODEL_CACHE_DIR", "")  # HF_HOME for downloads; "" = library default
# The customer's "VRAM and RAM the service may use" (accelerate max_memory), e.g. "7GiB".
MODEL_MAX_VRAM = envstr("MODEL_MAX_VRAM", "7GiB")
MODEL_MAX_RAM = envstr("MODEL_MAX_RAM", "16GiB")
MODEL_QUANTIZATION = envstr("MODEL_QUANTIZATION", "nf4")  # nf4 | bf16 (CUDA only)
DESCRIBER_MAX_PIXELS = envint("DESCRIBER_MAX_PIXELS", 1280 * 28 * 28)
# Fine-tuned LoRA adapters (`manage.py finetune`, describer/adapters.py): where they are written,
# and the one to serve while none is marked active in the admin ("" = the base model).
ADAPTERS_DIR = Path(envstr("ADAPTERS_DIR", str(BASE_DIR / "var" / "adapters")))
DESCRIBER_ADAPTER = envstr("DESCRIBER_ADAPTER", "")
DESCRIBER_MAX_NEW_TOKENS = envint("DESCRIBER_MAX_NEW_TOKENS", 1024)
DESCRIBER_MIN_NEW_TOKENS = envint("DESCRIBER_MIN_NEW_TOKENS", 0)
DESCRIBER_TIME_LIMIT_S = envfloat("DESCRIBER_TIME_LIMIT_S", 300)
DESCRIBER_MAX_ATTEMPTS = envint("DESCRIBER_MAX_ATTEMPTS", 3)
# Text → diagram: how many times a user may send unparseable code back to the model.
DESCRIBER_MAX_REPAIRS = envint("DESCRIBER_MAX_REPAIRS", 3)
# Jobs claimed together generate as one batch (docs/PERFORMANCE.md has the figures).
DESCRIBER_BATCH_SIZE = envint("DESCRIBER_BATCH_SIZE", 16)
DESCRIBER_BATCH_WINDOW_MS = envint("DESCRIBER_BATCH_WINDOW_MS", 50)
# "continuous": jobs join the running batch at the next decode step, slots sized by MODEL_MAX_VRAM
# (DESCRIBER_BATCH_SIZE is then a ceiling); "static": a batch runs to its end before the next.
DESCRIBER_SCHEDULER = envstr("DESCRIBER_SCHEDULER", "continuous")
# The longest prompt a decoding slot holds beside DESCRIBER_MAX_NEW_TOKENS (a 1600x1200 diagram
# with 3 examples takes ~3,500), and the prompt tokens one prefill piece runs between decode steps.
DESCRIBER_MAX_PROMPT_TOKENS = envint("DESCRIBER_MAX_PROMPT_TOKENS", 4096)
DESCRIBER_PREFILL_CHUNK = envint("DESCRIBER_PREFILL_CHUNK", 2048)
DESCRIBER_POLL_SECONDS = envfloat("DESCRIBER_POLL_SECONDS", 5)
# The static-KV-cache decoder's step as one CUDA graph (CUDA only); off: the same step eagerly.
DESCRIBER_CUDA_GRAPHS = envbool("DESCRIBER_CUDA_GRAPHS", True)
# Decoding constrained to the grammar of each kind's answer (describer/graph/grammar.py).
DESCRIBER_CONSTRAINED = envbool("DESCRIBER_CONSTRAINED", True)
# Reading the diagram's own text (Tesseract) beside the GPU work, to measure how the description
# covers it; with OCR_IN_PROMPT the labels found also go into the describer's prompt.
DESCRIBER_OCR = envbool("DESCRIBER_OCR", True)
DESCRIBER_OCR_IN_PROMPT = envbool("DESCRIBER_OCR_IN_PROMPT", False)
OCR_TESSDATA = envstr("OCR_TESSDATA", "")  # "" = Debian's tesseract-ocr-eng/-rus location
OCR_MAX_PIXELS = envint("OCR_MAX_PIXELS", 12_000_000)  # larger images are read scaled down
DESCRIBER_STREAM_INTERVAL_MS = envint("DESCRIBER_STREAM_INTERVAL_MS", 100)
# Every job a worker holds, and the worker itself, report this often (describer/worker.py).
DESCRIBER_HEARTBEAT_S = envfloat("DESCRIBER_HEARTBEAT_S", 10)
# A held job whose heartbeat is older than this belongs to a dead worker (checked at start:
# at least 3 heartbeats, so one slow database write never requeues a live job).
DESCRIBER_STALE_AFTER_S = envfloat("DESCRIBER_STALE_AFTER_S", 120)
WORKER_CHANNEL = "describer-gpu"
# The largest process graph accepted, in nodes (describer/graph/model.py).
GRAPH_MAX_NODES = envint("GRAPH_MAX_NODES", 300)
RETRIEVAL_K = envint("RETRIEVAL_K", 3)
RETRIEVAL_MAX_DISTANCE = envfloat("RETRIEVAL_MAX_DISTANCE", 0.6)

# --- Security ----------------------------------------------------------------------
SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG and envbool("DJANGO_HTTPS", False))
SESSION_COOKIE_SECURE = envbool("DJANGO_HTTPS", False)
CSRF_COOKIE_SECURE = envbool("DJANGO_HTTPS", False)
SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("DJANGO_BEHIND_PROXY", False) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy (django-csp 4). Scripts only from the site's own files: no inline
# scripts, event-handler attributes or eval anywhere (htmx's allowEval is off, base.html).
# connect-src also gets ws:// and wss:// of the request's host (describer/middleware.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # Mermaid writes a <style> element into every SVG it draws and sets style attributes,
        # and cannot carry a nonce (a nonce would also switch 'unsafe-inline' off): inline
        # styles must stay allowed. Styles cannot run code; scripts stay locked down.
        "style-src": ["'self'", "'unsafe-inline'"],
        # data: for Mermaid's and Swagger UI's inline images, blob: for the PNG export's SVG.
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django": {"level": envstr("LOG_LEVEL", "INFO")}},
}
