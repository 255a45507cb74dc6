# Relais chatbot image: `docker build -t relais .` then `docker run -p 8080:8080 -v relais-data:/data relais`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RELAIS_HOST=0.0.0.0 \
    RELAIS_LOCALES_DIR=/app/locales

# Dependencies only from the hashed lock (scripts/lock.sh), in their own layer; then the
# package itself (no dependency resolution, build backend from the lock) into site-packages.
# Source (incl. locales/) lives at /app.
WORKDIR /app
COPY requirements/app.txt /app/requirements/app.txt
RUN pip install --no-cache-dir --require-hashes -r /app/requirements/app.txt
COPY . /app
RUN pip install --no-cache-dir --no-deps --no-build-isolation /app \
    && useradd --create-home --uid 10001 --user-group relais \
    && mkdir -p /data \
    && chown relais:relais /data

# Unprivileged runtime; /data is owned by relais before it becomes a volume.
USER relais
WORKDIR /data
VOLUME ["/data"]

EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

CMD ["relais", "serve"]
