# partnerpulse worker / simulator image.
#   docker build -t partnerpulse .
#   docker run --rm partnerpulse --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Metadata and sources first; config/ lands in /app/config, the default
# config directory of an installed (non-editable) partnerpulse run from /app.
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY config ./config
RUN pip install . \
    && useradd --create-home --uid 10001 partnerpulse \
    && mkdir -p /data \
    && chown partnerpulse:partnerpulse /data

USER partnerpulse
ENV PARTNERPULSE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 6066

ENTRYPOINT ["partnerpulse"]
CMD ["--help"]
