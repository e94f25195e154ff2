# syntax=docker/dockerfile:1
# Multi-stage: wheels are built once; the final image has no compiler and runs as non-root.
#   docker build -t recsvc .                      # serve + train (default)
#   docker build --target serve -t recsvc:serve .  # serving only: no implicit/scipy/pyarrow

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip wheel
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY recsvc ./recsvc
COPY training ./training
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[train]"

FROM python:3.11-slim AS serve
ENV OPENBLAS_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECSVC_HOST=0.0.0.0 \
    RECSVC_PORT=50051 \
    RECSVC_METRICS_PORT=9464
# /data belongs to the non-root user: a fresh named volume mounted there copies this ownership,
# so `recsvc datagen/train` can write into it (a volume on a missing directory is root's).
# Fixed ids (10001) so orchestrators can name them (Kubernetes fsGroup, see the README).
RUN groupadd --system --gid 10001 recsvc \
    && useradd --system --uid 10001 --gid recsvc --home-dir /app recsvc \
    && mkdir -p /data && chown recsvc:recsvc /data
WORKDIR /app
# Wheels are bind-mounted, not copied: the training wheels never land in this stage's layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels recsvc
USER recsvc
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["recsvc", "health", "--target", "127.0.0.1:50051"]
CMD ["recsvc", "serve"]

FROM serve AS full
USER root
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "recsvc[train]"
USER recsvc
CMD ["recsvc", "serve"]
