#!/usr/bin/env bash
# The soak in one command: `bash bench/soak.sh [--turns 3000] [--users 100] [--concurrency 8]`.
# Needs PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379); uses the
# project's .venv (created by scripts/run.sh or scripts/test.sh). See bench/README.md, "Soak".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv
exec "$VENV_PY" -m bench.soak "$@"
