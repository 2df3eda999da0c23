# syntax=docker/dockerfile:1
# One image for every app service: escavador/executador workers, Flower and the console.
#   docker build -t orchestrator:local .
#   docker run --rm -e ORCHESTRATOR_BROKER_URL=amqp://user:pass@host:5672// orchestrator:local
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ORCHESTRATOR_DATA_DIR=/app/data

# Workers never run as root.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

# Install the project (packages orchestrator and tasks, module celeryconfig, the
# `orchestrator` console script); the sources are removed afterwards, only the installed
# package is used. README.m[d]: copied when present (pyproject's readme), never required.
WORKDIR /src
COPY pyproject.toml celeryconfig.py README.m[d] ./
COPY orchestrator ./orchestrator
COPY tasks ./tasks
RUN pip install '.[gevent]' \
 && cd / && rm -rf /src

# Data directory of executador_arquivo; owned by the app user so a named volume mounted
# here starts out writable.
WORKDIR /app
RUN mkdir -p /app/data && chown -R app:app /app
USER app

CMD ["celery", "-A", "orchestrator", "worker", "--loglevel=INFO"]
