#!/usr/bin/env bash
# Run Pantheon on this machine the way production serves it: gunicorn with uvicorn workers in
# front of the ASGI application, DEBUG off, static files from whitenoise.
#
# Needs only Python 3.11. Creates .venv, installs the project, writes a development .env (a
# generated SECRET_KEY) when there is none, migrates (SQLite in db.sqlite3 unless DATABASE_URL is
# set), seeds the demo data, prints how to use it, then serves on http://$HOST:$PORT/.
#
# Environment: HOST (127.0.0.1), PORT (8000), WEB_CONCURRENCY (2 workers), plus any setting in
# the README's configuration table (DATABASE_URL, REDIS_URL, OPENROUTER_API_KEY, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
WORKERS="${WEB_CONCURRENCY:-2}"

ensure_venv

if [ ! -f .env ]; then
    say "Writing .env for development (a generated SECRET_KEY) ..."
    secret="$("$VENV_PY" -c 'import secrets; print(secrets.token_urlsafe(50))')"
    (
        umask 077
        {
            say "# Written by scripts/run.sh for local development. Not for production."
            say "SECRET_KEY=$secret"
        } >.env
    )
fi

# Fail early and clearly when the port is taken, rather than through gunicorn's retries.
if ! "$VENV_PY" - "$HOST" "$PORT" <<'PY'; then
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as sock:
    try:
        sock.bind((host, port))
    except OSError:
        sys.exit(1)
PY
    die "Port $PORT on $HOST is already in use. Stop what is using it, or run: PORT=8001 bash scripts/run.sh"
fi

"$VENV_PY" manage.py migrate --noinput
mkdir -p staticfiles # whitenoise serves from the finders; an absent STATIC_ROOT only warns.

case "$HOST" in
    0.0.0.0 | "::") public_host=127.0.0.1 ;;
    *) public_host="$HOST" ;;
esac
"$VENV_PY" manage.py seed_demo --base-url "http://$public_host:$PORT"

if [ -z "${OPENROUTER_API_KEY:-}" ] && ! grep -qE '^OPENROUTER_API_KEY=.+' .env 2>/dev/null; then
    say "LLM provider: offline stand-in (set OPENROUTER_API_KEY to call real models)."
fi
say "Serving on http://$public_host:$PORT/ (Ctrl-C to stop)."
say ""

# --preload: the application is loaded once and the workers share it (README, "Production").
exec "$VENV_DIR/bin/gunicorn" pantheon.asgi:application \
    --preload \
    -k uvicorn_worker.UvicornWorker \
    --bind "$HOST:$PORT" \
    --workers "$WORKERS" \
    --timeout 120 \
    --graceful-timeout 30 \
    --keep-alive 5 \
    --access-logfile -
