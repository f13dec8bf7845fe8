#!/usr/bin/env bash
# Run Pantheon on this machine the way production serves it: the processes of the Procfile under
# honcho — gunicorn with uvicorn workers in front of the ASGI application (DEBUG off, static files
# from whitenoise), and, when a broker answers, the Celery worker (summaries) and beat (sweeps).
#
# Needs only Python 3.11. Creates .venv, installs the project, writes a development .env (a
# generated SECRET_KEY) when there is none, migrates (SQLite in db.sqlite3 unless DATABASE_URL is
# set), seeds the demo data (its API key and admin password are kept in .pantheon-demo.json, so
# they survive restarts), prints how to use it, then serves on http://$HOST:$PORT/.
#
# The broker is CELERY_BROKER_URL (from the environment or .env; Redis at 127.0.0.1:6379/0 by
# default). When it does not answer, everything runs without one: CELERY_BROKER_URL is set empty,
# so summaries are written in the web process after each turn, and no worker or beat is started.
#
# Environment: HOST (127.0.0.1), PORT (8000), WEB_CONCURRENCY (2 web workers),
# CELERY_WORKER_CONCURRENCY (2), plus any setting in the README's configuration table
# (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL, OPENROUTER_API_KEY, ...). Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export HOST="${HOST:-127.0.0.1}"
export PORT="${PORT:-8000}"
export WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}"
CREDENTIALS_FILE=".pantheon-demo.json"

ensure_venv
# The Procfile's commands (gunicorn, celery) and honcho itself come from .venv.
export PATH="$PWD/$VENV_DIR/bin:$PATH"

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
    # As gunicorn binds: the connections of a server stopped a moment ago (TIME_WAIT) do not
    # count, a listening socket does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
"$VENV_PY" manage.py seed_demo --base-url "http://$public_host:$PORT" \
    --credentials-file "$CREDENTIALS_FILE"

# The broker as the application will see it: the environment first, then .env, then the default.
broker_url="$("$VENV_PY" -c 'from pantheon import settings; print(settings.CELERY_BROKER_URL)')"
processes=(web)
case "$broker_url" in
    "") broker_state="none configured (CELERY_BROKER_URL is empty)" ;;
    redis://*)
        if probe redis "$broker_url"; then broker_state=ok; else broker_state="no answer"; fi
        ;;
    *) broker_state=ok ;; # not Redis: nothing to probe here; the worker reports its own errors
esac
if [ "$broker_state" = ok ]; then
    processes+=(worker beat)
    say "Broker: $(redact_url "$broker_url")."
    say "Running web, worker (writes the summaries) and beat (runs the periodic sweeps)."
else
    if [ -n "$broker_url" ]; then broker_state="no answer at $(redact_url "$broker_url")"; fi
    export CELERY_BROKER_URL=""
    say "Broker: $broker_state."
    say "Running web only: summaries are written in the web process after each turn; without"
    say "beat there are no periodic sweeps (README, \"Running it locally\")."
fi

if [ -z "${OPENROUTER_API_KEY:-}" ] && ! grep -qE '^OPENROUTER_API_KEY=.+' .env 2>/dev/null; then
    say "LLM provider: offline stand-in (set OPENROUTER_API_KEY to call real models)."
fi
say "Serving on http://$public_host:$PORT/ (Ctrl-C to stop)."
say ""

# honcho runs the Procfile's entries and stops them all when one stops or on Ctrl-C. `--env
# /dev/null`: the application reads .env itself (settings.py), where the environment exported
# above wins; honcho's own .env loading would override it (an empty CELERY_BROKER_URL, PORT).
# PYTHONUNBUFFERED: each line shows up when it is written, not when a pipe buffer fills.
export PYTHONUNBUFFERED=1
exec honcho start --env /dev/null --port "$PORT" "${processes[@]}"
