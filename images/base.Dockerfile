# The base of the three images: Python, a virtualenv, the non-root user, read-only-root-friendly
# environment, the pins, and autodetect with the light dependencies that every image needs (what
# `autodetect operator` imports: specs, decisions, kopf; no torch). The three images build FROM it:
#   docker build -f images/base.Dockerfile -t autodetect-base:0.1.0 .
#   docker build -f images/base.Dockerfile --build-arg FLAVOR=gpu -t autodetect-base:0.1.0-gpu .
# FLAVOR=gpu starts from NVIDIA's CUDA + cuDNN runtime (for ONNX Runtime's CUDA execution provider).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG FLAVOR=cpu

FROM ${PYTHON_IMAGE} AS python-cpu

FROM ${CUDA_IMAGE} AS python-gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM python-${FLAVOR} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/opt/autodetect/constraints.txt \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    MPLCONFIGDIR=/tmp/matplotlib
RUN python3 -m venv /opt/venv \
    && groupadd --gid 10001 autodetect \
    && useradd --uid 10001 --gid autodetect --no-create-home --home-dir /tmp --shell /usr/sbin/nologin autodetect
WORKDIR /opt/autodetect
COPY images/constraints.txt ./
COPY pyproject.toml README.md ./
COPY src ./src
# The package without its dependencies, then the light ones; each image adds what its command imports.
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir kopf kubernetes pydantic pyyaml numpy pillow optuna rich tqdm prometheus-client httpx
USER 10001:10001
WORKDIR /tmp

FROM base AS ml
ARG FLAVOR
USER 0:0
# libgl1 and libglib2.0 for OpenCV (ultralytics); then the package again, now with all its dependencies.
# FLAVOR=cpu takes torch's CPU wheels (a fraction of the size; 2.14.1+cpu meets the ==2.14.1 pin), FLAVOR=gpu
# PyPI's CUDA wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && if [ "$FLAVOR" = cpu ]; then \
         pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch torchvision; fi \
    && pip install --no-cache-dir /opt/autodetect
USER 10001:10001
