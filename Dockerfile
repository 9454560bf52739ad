# syntax=docker/dockerfile:1
# The lead exchange as a container: `docker compose up` (docker-compose.yml) runs it
# beside PostgreSQL, Prometheus and Grafana. docs/observability.md explains the stack.

# --- builder: the project's wheel and every dependency's, nothing else ----------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exchange ./exchange
COPY buyers ./buyers
RUN pip wheel --wheel-dir /wheels .

# --- runtime: slim Python, the wheels installed offline, an unprivileged user ---------
FROM python:3.11-slim AS runtime

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 exchange \
    && useradd --system --uid 10001 --gid exchange --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin exchange

RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/*.whl

# The working directory is where `serve` keeps its embedded database when no
# DATABASE_URL is given; docker-compose.yml always gives one.
WORKDIR /app
RUN chown exchange:exchange /app
USER 10001:10001

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

ENTRYPOINT ["lead-exchange"]
CMD ["serve", "--config", "/config/example.yaml", "--host", "0.0.0.0", "--port", "8080"]
