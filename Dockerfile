# Pantheon web, worker and beat image: Python 3.11, the project installed with pip, static files
# collected at build time, running as a non-root user. The default command serves the ASGI
# application the way production does; docker-compose.yml reuses the image for worker and beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
# The code stays owned by root (read-only for the app); the user may only create files in /app
# itself, which celery beat needs for its schedule file.
RUN pip install --no-deps . \
    && python manage.py collectstatic --noinput \
    && groupadd --system pantheon \
    && useradd --system --gid pantheon --home-dir /app --no-create-home --shell /usr/sbin/nologin pantheon \
    && chown pantheon:pantheon /app

USER pantheon

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4).status != 200)"]

# No access log: the application writes one JSON line per request. scripts/gunicorn.conf.py keeps
# a graceful stop's worker exits out of the error log.
CMD ["gunicorn", "-c", "scripts/gunicorn.conf.py", "pantheon.asgi:application", \
     "--preload", \
     "-k", "uvicorn_worker.UvicornWorker", \
     "--bind", "0.0.0.0:8000", \
     "--workers", "2", \
     "--timeout", "120", \
     "--graceful-timeout", "30", \
     "--keep-alive", "5"]
