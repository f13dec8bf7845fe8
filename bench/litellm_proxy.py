"""The optional comparator: a LiteLLM proxy in its own virtualenv (bench/.venv-litellm, never a
project dependency), pointed at the same stub, in its lightest configuration — one worker, no
database, no spend logging, the bundled model-cost map (no network at start-up)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from bench import harness

VENV = Path(__file__).resolve().parent / ".venv-litellm"
REQUIREMENT = "litellm[proxy]"
STAMP = VENV / ".bench-installed"


class Unavailable(Exception):
    """LiteLLM could not be installed or started here; the run reports it as skipped."""


def ensure_installed(log_dir: Path) -> Path:
    """Create the virtualenv and `pip install 'litellm[proxy]'` once; answer the CLI path."""
    cli = VENV / "bin" / "litellm"
    if STAMP.exists() and cli.exists():
        return cli
    log = log_dir / "litellm-install.log"
    python = os.environ.get("PANTHEON_PYTHON", "python3.11")
    with log.open("wb") as out:
        steps = [
            [python, "-m", "venv", str(VENV)],
            [
                str(VENV / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                REQUIREMENT,
            ],
        ]
        for argv in steps:
            try:
                code = subprocess.run(  # noqa: S603  (fixed argv, no shell)
                    argv, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise Unavailable(f"{argv[0]} failed: {exc}") from exc
            if code != 0:
                raise Unavailable(f"`{' '.join(argv)}` exited {code} (see {log})")
    if not cli.exists():
        raise Unavailable(f"no litellm CLI in {VENV}")
    STAMP.write_text("ok\n")
    return cli


def version() -> str:
    pip = VENV / "bin" / "pip"
    out = subprocess.run(  # noqa: S603
        [str(pip), "show", "litellm"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {stub_url}
      api_key: x
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  master_key: {master_key}
"""


def start(*, stub_url: str, model: str, log_dir: Path) -> tuple[harness.Service, str, str]:
    """Start the proxy on a free loopback port; answer (service, base URL, master key). The
    proxy refuses to start without a master key; checking it costs a string comparison (no
    database), as Pantheon checks its API keys."""
    cli = ensure_installed(log_dir)
    config = log_dir / "litellm.yaml"
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config.write_text(CONFIG.format(model=model, stub_url=stub_url, master_key=master_key))
    port = harness.free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        # No database, no cache: the lightest configuration (LiteLLM reads these itself).
        if key not in {"DATABASE_URL", "REDIS_URL", "REDIS_HOST", "CELERY_BROKER_URL"}
    }
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "PYTHONUNBUFFERED": "1",
        }
    )
    argv = [
        str(cli),
        "--config",
        str(config),
        "--host",
        harness.LOOPBACK,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    service = harness.start_service("litellm", argv, env=env, cwd=log_dir, log_dir=log_dir)
    url = f"http://{harness.LOOPBACK}:{port}"
    try:
        harness.wait_until_up(service, f"{url}/health/liveliness", timeout=120)
    except RuntimeError as exc:
        service.stop()
        raise Unavailable(str(exc)) from exc
    return service, url, master_key


if __name__ == "__main__":  # `python -m bench.litellm_proxy`: install only
    print(ensure_installed(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))
