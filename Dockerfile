# One image, two entrypoints: `asyncjobs-api` (the default) and `asyncjobs-operator`.
# Dependencies come from uv.lock; the runtime stage has no build tools and runs as a
# non-root user with a read-only root filesystem (the chart sets readOnlyRootFilesystem).

FROM python:3.11-slim-bookworm AS build
# Where the downloads below come from and which CAs they trust, for builds behind a
# package mirror or a TLS-inspecting proxy (scripts/image-test passes the host's). Unset by
# default; they exist only in this stage, so nothing of them reaches the runtime image.
ARG PIP_INDEX_URL PIP_CERT SSL_CERT_FILE UV_DEFAULT_INDEX
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="asyncjobs" \
      org.opencontainers.image.description="Asynchronous LLM inference jobs on Kubernetes"
ENV PATH=/app/.venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin asyncjobs
COPY --from=build /app/.venv /app/.venv
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["asyncjobs-api"]
