# Shared shell functions for scripts/run.sh, scripts/test.sh and .ci/run.
# Source it from the project root: `. scripts/lib.sh`.

PANTHEON_PYTHON="${PANTHEON_PYTHON:-python3.11}"
VENV_DIR=".venv"
VENV_PY="$VENV_DIR/bin/python"

say() { printf '%s\n' "$*"; }
die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

is_ci() {
    case "${CI:-}" in
        1 | true | TRUE | True | yes | YES) return 0 ;;
        *) return 1 ;;
    esac
}

# ensure_venv [dev]: create .venv with Python 3.11 when missing and install the project into it
# (editable; with the dev extras when asked). A stamp holding the hash of pyproject.toml makes a
# re-run with nothing changed cost almost nothing.
ensure_venv() {
    local extra="${1:-}"
    if [ ! -x "$VENV_PY" ]; then
        command -v "$PANTHEON_PYTHON" >/dev/null 2>&1 ||
            die "$PANTHEON_PYTHON was not found. Install Python 3.11 (or set PANTHEON_PYTHON)."
        say "Creating $VENV_DIR with $PANTHEON_PYTHON ..."
        "$PANTHEON_PYTHON" -m venv "$VENV_DIR"
    fi
    "$VENV_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
        die "$VENV_DIR is not a Python 3.11 environment: remove it and run again."

    local digest stamp_base stamp_dev target
    digest="$("$VENV_PY" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
    stamp_base="$VENV_DIR/.pantheon-installed"
    stamp_dev="$VENV_DIR/.pantheon-installed-dev"
    # The dev install contains the base install.
    if [ "$(cat "$stamp_dev" 2>/dev/null)" = "$digest" ]; then
        return 0
    fi
    if [ -z "$extra" ] && [ "$(cat "$stamp_base" 2>/dev/null)" = "$digest" ]; then
        return 0
    fi
    if [ -n "$extra" ]; then target=".[$extra]"; else target="."; fi
    say "Installing the project into $VENV_DIR (pip install -e '$target') ..."
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e "$target"
    if [ -n "$extra" ]; then
        printf '%s\n' "$digest" >"$stamp_dev"
    else
        printf '%s\n' "$digest" >"$stamp_base"
    fi
}

# probe postgres|redis URL: succeed when the service at URL answers its own protocol within
# about a second (PostgreSQL: an SSLRequest answered 'S' or 'N'; Redis: PING answered +PONG).
# Plain Python sockets, so it needs neither pg_isready nor redis-cli nor the target database.
probe() {
    "$VENV_PY" - "$1" "$2" <<'PY'
import socket
import struct
import sys
from urllib.parse import unquote, urlparse

kind, url = sys.argv[1], sys.argv[2]
parsed = urlparse(url)
host = parsed.hostname or "127.0.0.1"
port = parsed.port or (5432 if kind == "postgres" else 6379)
try:
    with socket.create_connection((host, port), timeout=1) as sock:
        sock.settimeout(1)
        if kind == "postgres":
            sock.sendall(struct.pack("!ii", 8, 80877103))
            ok = sock.recv(1) in (b"S", b"N")
        else:
            if parsed.password:
                user = unquote(parsed.username or "default")
                password = unquote(parsed.password)
                sock.sendall(
                    f"AUTH {user} {password}\r\n".encode()
                    if parsed.username
                    else f"AUTH {password}\r\n".encode()
                )
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            ok = sock.recv(64).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

# wait_for postgres|redis URL SECONDS: probe once a second until the service answers.
wait_for() {
    local kind="$1" url="$2" seconds="$3" i
    for ((i = 0; i < seconds; i++)); do
        if probe "$kind" "$url"; then
            return 0
        fi
        sleep 1
    done
    return 1
}

# The URL without its password, for printing.
redact_url() {
    printf '%s' "$1" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'
}
