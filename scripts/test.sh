#!/usr/bin/env bash
# Run the whole test suite: `bash scripts/test.sh [pytest args]`.
#
# Uses PostgreSQL and Redis when they answer (DATABASE_URL, REDIS_URL and CELERY_BROKER_URL are
# honoured when already set; otherwise the local defaults below). A missing service is reported
# loudly and the tests that need it are skipped; the rest run on SQLite. Under CI=true a missing
# service is a failure, before any test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEFAULT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/pantheon"
DEFAULT_REDIS_URL="redis://127.0.0.1:6379/1"
DEFAULT_BROKER_URL="redis://127.0.0.1:6379/2"

ensure_venv dev

missing=()

database_url="${DATABASE_URL:-$DEFAULT_DATABASE_URL}"
case "$database_url" in
    postgres://* | postgresql://* | pgsql://* | psql://*)
        if probe postgres "$database_url"; then
            export DATABASE_URL="$database_url"
            say "PostgreSQL: $(redact_url "$database_url") (tests use test_<name>)"
        else
            missing+=("postgres: PostgreSQL does not answer at $(redact_url "$database_url")")
            unset DATABASE_URL
        fi
        ;;
    *)
        missing+=("postgres: DATABASE_URL is not PostgreSQL ($(redact_url "$database_url"))")
        ;;
esac

redis_url="${REDIS_URL:-$DEFAULT_REDIS_URL}"
if probe redis "$redis_url"; then
    export REDIS_URL="$redis_url"
    export CELERY_BROKER_URL="${CELERY_BROKER_URL:-$DEFAULT_BROKER_URL}"
    say "Redis: cache $(redact_url "$REDIS_URL"), broker $(redact_url "$CELERY_BROKER_URL")"
else
    missing+=("redis: Redis does not answer at $(redact_url "$redis_url")")
    # Without Redis the cache falls back to local memory and the broker is unreachable.
    unset REDIS_URL CELERY_BROKER_URL
fi

banner() {
    local line
    printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    for line in "$@"; do
        printf '!!! %s\n' "$line" >&2
    done
    printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}

if [ "${#missing[@]}" -gt 0 ]; then
    if is_ci; then
        banner "CI=true: required services are missing, refusing to run a partial suite." \
            "${missing[@]}" \
            "Start PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379), or set DATABASE_URL/REDIS_URL."
        exit 3
    fi
    skipped_lines=()
    for entry in "${missing[@]}"; do
        skipped_lines+=("SKIPPED: tests marked '${entry%%:*}' will not run -${entry#*:}")
    done
    banner "SERVICES MISSING - THIS IS NOT A FULL TEST RUN" \
        "${skipped_lines[@]}" \
        "Everything else runs (on SQLite when PostgreSQL is missing; SQLite ignores row locks)." \
        "Start PostgreSQL and Redis and run this command again for a full run."
fi

pytest_args=()
# The pytest cache is gitignored; CI does not need it at all.
if is_ci; then pytest_args+=(-p no:cacheprovider); fi

set +e
"$VENV_PY" -m pytest ${pytest_args[@]+"${pytest_args[@]}"} "$@"
status=$?
set -e

if [ "$status" -eq 5 ]; then
    banner "pytest collected no tests (exit code 5): that is a failure, not a pass."
fi
if [ "${#missing[@]}" -gt 0 ]; then
    banner "REMINDER: not a full run - ${#missing[@]} service(s) missing:" "${missing[@]}"
fi
exit "$status"
