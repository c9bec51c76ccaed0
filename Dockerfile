# The gateway's container image: `docker build -t model-gateway:0.1.0 .`
#
#   docker run --rm -p 8000:8000 -e GATEWAY_ADMIN_TOKEN="$(openssl rand -hex 24)" model-gateway:0.1.0 serve --host 0.0.0.0 --demo
#
# Two stages on one pinned base: `builder` compiles the project's one C part (monitoring/_binning.c, drift's
# binning kernel: setup.py), builds the project's wheel and installs it with its dependencies into /opt/venv
# (every dependency ships manylinux wheels); the final stage copies only that venv, so it has no compiler, no
# sources and no pip cache, and runs as UID 10001.
#
# Configuration is the GATEWAY_* variables of `gateway serve` (every flag reads GATEWAY_<FLAG>):
#   GATEWAY_ADMIN_TOKEN    REQUIRED: the default command binds 0.0.0.0, and the gateway refuses a non-loopback
#                          address without an admin token (at least 16 characters). Never baked into the image:
#                          pass it at run time (docker run -e / --env-file, a Kubernetes Secret).
#   GATEWAY_REGISTRY_URL   registry database, e.g. postgresql://gateway@postgres:5432/gateway (the password from
#                          PGPASSWORD, never in the URL); unset: SQLite in GATEWAY_DATA_DIR
#   GATEWAY_REDIS_URL      online features and shared drift windows, e.g. redis://redis:6379/0; unset: in memory
#   GATEWAY_DATA_DIR       embedded registry and artifact store (default /data: mount a volume there)
#   GATEWAY_PORT           listening port (default 8000, EXPOSEd below)
#   GATEWAY_WORKERS, GATEWAY_INTRA_OP_THREADS, GATEWAY_INFERENCE_THREADS, GATEWAY_GRACEFUL_TIMEOUT,
#   GATEWAY_POLL_INTERVAL, GATEWAY_LOG_LEVEL: see `gateway serve --help`
#
# For reproducible builds, pin the base by digest too: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
COPY registry ./registry
COPY featurestore ./featurestore
COPY monitoring ./monitoring
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --only-binary=:all: /wheels/*.whl \
 && cd / && /opt/venv/bin/python -c "import monitoring._binning"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="model-gateway" \
      org.opencontainers.image.description="ONNX model-serving gateway: KServe v1 and Open Inference Protocol v2"
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gateway \
 && mkdir /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_DATA_DIR=/data \
    GATEWAY_PORT=8000
WORKDIR /data
USER 10001:10001
EXPOSE 8000
# python, not curl (slim has none): liveness only, readiness is the orchestrator's (/v2/health/ready)
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8000') + '/v2/health/live', timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0"]
