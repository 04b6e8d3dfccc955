# One image for both processes: the web (daphne, the default command) and the
# GPU worker (`python manage.py runworker describer-gpu`).
#
# Why python:3.12-slim and not an nvidia/cuda base image: torch's Linux wheels
# bring their own CUDA 13 runtime, cuBLAS and cuDNN as pip packages (nvidia-*),
# and bitsandbytes' CUDA kernels link against those once torch has loaded them.
# A CUDA base image would add a second, differently versioned copy of the same
# libraries. The NVIDIA Container Toolkit injects the driver (libcuda) at run
# time; CUDA 13 needs driver 580 or newer and a Turing-or-newer GPU (see
# TORCH_INDEX_URL below for older cards).
FROM python:3.12-slim-trixie

# Empty: torch from PyPI (CUDA 13). For driver < 580 or a Pascal/Volta GPU pass
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# /models is the model-cache volume: the first worker start downloads the weights there.
# /data/media is the media volume. Both match docker-compose.yml.
# DJANGO_SECRET_KEY_FILE is a path (the entrypoint writes a random key there), not a secret.
# hadolint ignore=DL3064
ENV HF_HOME=/models \
    TINY_MODELS_DIR=/models/tiny-models \
    MEDIA_ROOT=/data/media \
    STATIC_ROOT=/app/staticfiles \
    DJANGO_SECRET_KEY_FILE=/data/media/.django-secret-key
# No NVIDIA_VISIBLE_DEVICES here: compose's device reservation decides which
# container sees the GPU (the worker, not the web).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid app --create-home --shell /usr/sbin/nologin app

WORKDIR /app

# DejaVu Sans: the font of the PNG and SVG exports drawn on the server (Cyrillic included),
# Symbola for the emoji and symbols DejaVu lacks; Tesseract's English and Russian models for
# the worker's OCR stage (tesserocr brings libtesseract, not the models). `make test` installs
# the same packages (scripts/install_chromium.sh, scripts/install_tesseract.sh).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core fonts-symbola \
       tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus \
    && rm -rf /var/lib/apt/lists/*

# torch first and pinned, in its own layer: several GB that change rarely.
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
# Static files are collected at build time; compiled translations (locale/*.mo) are committed.
# Named volumes take the ownership of these directories on first use.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
    && chmod 0755 docker/*.sh \
    && mkdir -p /data/media /data/adapters /models/tiny-models \
    && chown -R app:app /data /models

USER 1000:1000
EXPOSE 8000

# For the web process; compose disables it for the worker, which serves no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "docker/healthcheck.py"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "diagramsite.asgi:application"]
