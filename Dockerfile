# syntax=docker/dockerfile:1
# facepose gateway. Models are built here, at image build time, by the same command `make` uses.

FROM python:3.11-slim AS models
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md NOTICE ./
COPY service ./service
COPY model_repository ./model_repository
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install '.[build]' \
    && /opt/build/bin/facepose models build --repo /src/model_repository

FROM python:3.11-slim AS runtime-env
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md NOTICE /src/
COPY service /src/service
RUN python -m venv /opt/facepose && /opt/facepose/bin/pip install /src

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin facepose
COPY --from=runtime-env /opt/facepose /opt/facepose
COPY --from=models --chown=10001:10001 /src/model_repository /app/model_repository
WORKDIR /app
ENV PATH=/opt/facepose/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FACEPOSE_HOST=0.0.0.0 \
    FACEPOSE_PORT=8080 \
    FACEPOSE_MODEL_REPOSITORY=/app/model_repository \
    FACEPOSE_RUNTIME=embedded
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"FACEPOSE_PORT\"]}/healthz', timeout=2)"]
CMD ["facepose", "serve"]
