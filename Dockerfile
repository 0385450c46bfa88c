# The Tidelog broker image (docs/deployment.md):
#   docker build -t tidelog .
#   docker run -d --name tidelog -p 9092:9092 -p 127.0.0.1:9644:9644 -v tidelog-data:/var/lib/tidelog \
#       -e TIDELOG_ADVERTISED_LISTENERS=PLAINTEXT://localhost:9092 tidelog
# A three-broker cluster with etcd: deploy/compose.yaml.

# Wheels of Tidelog (with its C extension, built here where a compiler is) and its dependencies.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A system user owns the data; the broker never runs as root.
RUN groupadd --system --gid 10001 tidelog \
    && useradd --system --uid 10001 --gid tidelog --home-dir /var/lib/tidelog --no-create-home --shell /usr/sbin/nologin tidelog \
    && mkdir -p /var/lib/tidelog \
    && chown tidelog:tidelog /var/lib/tidelog

COPY --from=build /wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels tidelog && rm -rf /tmp/wheels
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

USER tidelog
VOLUME ["/var/lib/tidelog"]
# Kafka, then HTTP (console, API, /metrics, /health, /ready).
EXPOSE 9092 9644
# /ready: listeners bound, metadata loaded, logs recovered, and in a cluster registered and caught up.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('TIDELOG_HTTP_PORT', '9644'), timeout=2)"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["serve"]
