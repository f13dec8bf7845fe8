"""Pantheon settings: one module, every value read from the environment (django-environ).

A first run needs nothing: SQLite in the project directory, local-memory cache, the offline LLM
provider. Production (`PANTHEON_ENV=production`) refuses to start without the settings it needs,
and `PANTHEON_HTTPS=1` switches on the TLS-only security settings so `check --deploy` is clean.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import environ
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured

import pantheon.db  # noqa: F401  (connects the pool's checkout check, see DATABASES below)

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
_dotenv = BASE_DIR / ".env"
if _dotenv.exists():
    environ.Env.read_env(_dotenv, overwrite=False)

PANTHEON_ENV = env.str("PANTHEON_ENV", default="development")
IS_PRODUCTION = PANTHEON_ENV == "production"

_REQUIRED_IN_PRODUCTION = ("SECRET_KEY", "DATABASE_URL", "PANTHEON_ENCRYPTION_KEYS")
if IS_PRODUCTION:
    _missing = [name for name in _REQUIRED_IN_PRODUCTION if not env.str(name, default="")]
    if _missing:
        raise ImproperlyConfigured(
            "Pantheon cannot start in production without: "
            + ", ".join(_missing)
            + ". Set them in the environment (see README, 'Configuration')."
        )

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = (
    env.str("SECRET_KEY", default="") or "pantheon-development-only-secret-key-not-for-prod"
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "accounts.apps.AccountsConfig",
    "llm.apps.LlmConfig",
    "usage.apps.UsageConfig",
    "rooms.apps.RoomsConfig",
    "sessions.apps.ChatSessionsConfig",
]

MIDDLEWARE = [
    "pantheon.api.logging.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Unauthenticated API requests, per client address (see REST_FRAMEWORK below).
    "pantheon.api.throttling.AnonymousThrottleMiddleware",
    # Content-Security-Policy on the admin and docs pages only (see below).
    "pantheon.security.PageCSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it only turns a login that axes refused into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "pantheon.urls"
WSGI_APPLICATION = "pantheon.wsgi.application"
ASGI_APPLICATION = "pantheon.asgi.application"
# The API has no trailing slashes and a POST must never be redirected.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
    # Under ASGI every request runs in a thread of its own: persistent per-thread connections
    # would pile up until PostgreSQL refuses more. psycopg's pool shares a bounded set instead
    # (workers times DATABASE_POOL_MAX_SIZE must stay below the server's max_connections).
    if env.bool("DATABASE_POOL", default=True):
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        # With a pool, Django turns this into the pool's check: one round trip per checkout, so
        # a connection that died while idle in the pool (a server restart, a killed backend) is
        # replaced instead of handed to a request; pantheon.db makes the first dead one drain
        # the pool (`pool_check`).
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=16),
            "timeout": env.float("DATABASE_POOL_TIMEOUT_SECONDS", default=10.0),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Tests that flush the database restore the data migrations' rows (catalog, pricing) with
# `serialized_rollback`; these apps' rows are recreated by post_migrate and must not be restored.
TEST_NON_SERIALIZED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]

AUTH_USER_MODEL = "accounts.User"
# django-axes' backend first: it refuses a locked-out login before any password is checked
# (`AxesStandaloneBackend`, letting in-process logins without a request through, see there). The
# API's bearer authentication never calls `authenticate()`, so axes sees admin logins only.
AUTHENTICATION_BACKENDS = [
    "pantheon.security.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True  # every datetime is timezone-aware: naive datetimes are a bug here.

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "pantheon" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env.str(
            "STATICFILES_BACKEND",
            default="whitenoise.storage.CompressedStaticFilesStorage",
        )
    },
}
WHITENOISE_USE_FINDERS = True  # serve admin/chart assets even before collectstatic

# --- Cache (throttling and shared counters must hold across processes) ---------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="pantheon"),
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Security ---------------------------------------------------------------------------------
PANTHEON_HTTPS = env.bool("PANTHEON_HTTPS", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if PANTHEON_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_REFERRER_POLICY = "same-origin"
    SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content-Security-Policy (django-csp 4 format) for the HTML pages: the admin and the API docs
# (Swagger UI from drf-spectacular-sidecar). Everything they load is served by Pantheon itself;
# their few inline <script>/<style> blocks carry the request's nonce; Swagger UI's stylesheet
# draws its icons from data: URIs. JSON API responses get no header and no per-request work:
# `pantheon.security.PageCSPMiddleware` acts only under these path prefixes.
CSP_PAGE_PATH_PREFIXES = ("/admin/", "/api/docs/")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'", csp_constants.NONCE],
        "style-src": ["'self'", csp_constants.NONCE],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }
}

# --- Admin login lockout (django-axes) ---------------------------------------------------------
# A few failed logins lock the account (from any address) and the address (for any account)
# for a cool-off; every further attempt during it, right password or not, is refused and restarts
# it. Attempts live in the database (visible in the admin; `manage.py axes_reset` unlocks).
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each alone: account OR address
# The admin login form posts `username` (whatever USERNAME_FIELD is) and Django reports failed
# attempts with that key: without this, axes would look for `email` and count no account.
AXES_USERNAME_FORM_FIELD = "username"
# The same client address as the API's per-address throttle (one place decides it).
AXES_CLIENT_IP_CALLABLE = "pantheon.api.throttling.client_address"
AXES_LOCKOUT_TEMPLATE = "admin/login_locked_out.html"
# A success must not wipe the address's failures: one valid account would reset the counter
# an attacker spends on the others.
AXES_RESET_ON_SUCCESS = False
# Failures and lockouts are still logged (warnings); no start-up banner in every process.
AXES_VERBOSE = False

# Large enough for a TURN_INPUT_MAX_CHARS input of multi-byte characters plus JSON overhead.
TURN_INPUT_MAX_CHARS = env.int("TURN_INPUT_MAX_CHARS", default=200_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", default=max(2_621_440, TURN_INPUT_MAX_CHARS * 4 + 65_536)
)

# --- Secrets at rest ---------------------------------------------------------------------------


def _development_fernet_key(secret: str) -> str:
    # Development only: a stable key derived from SECRET_KEY so a first run needs no setup.
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()).decode()


PANTHEON_ENCRYPTION_KEYS = env.list("PANTHEON_ENCRYPTION_KEYS", default=[]) or [
    _development_fernet_key(SECRET_KEY)
]

# --- Identity ----------------------------------------------------------------------------------
SUPABASE_JWT_SECRETS = env.list("SUPABASE_JWT_SECRETS", default=[])
SUPABASE_JWKS_URL = env.str("SUPABASE_JWKS_URL", default="")
SUPABASE_ISSUER = env.str("SUPABASE_ISSUER", default="")
SUPABASE_JWT_AUDIENCE = env.str("SUPABASE_JWT_AUDIENCE", default="authenticated")
API_KEY_LAST_USED_RESOLUTION_SECONDS = 60

# --- API ---------------------------------------------------------------------------------------
PANTHEON_THROTTLE_USER = env.str("PANTHEON_THROTTLE_USER", default="1200/min")
PANTHEON_THROTTLE_TURNS = env.str("PANTHEON_THROTTLE_TURNS", default="60/min")
# Requests without valid credentials (none, or a bearer that fails with 401), per client address.
PANTHEON_THROTTLE_ANON = env.str("PANTHEON_THROTTLE_ANON", default="120/min")
# How many proxies in front of Pantheon append to X-Forwarded-For. 0: the client address is the
# connection's (REMOTE_ADDR, which uvicorn already rewrites for the proxies it trusts, see
# FORWARDED_ALLOW_IPS); the header is never believed beyond that, or any client could pick a fresh
# address per request and escape every per-address limit.
PANTHEON_NUM_PROXIES = env.int("PANTHEON_NUM_PROXIES", default=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.BearerAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["pantheon.api.parsers.JSONParser"],
    "DEFAULT_METADATA_CLASS": "pantheon.api.metadata.MinimalMetadata",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "pantheon.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["pantheon.api.throttling.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": PANTHEON_THROTTLE_USER,
        "turns": PANTHEON_THROTTLE_TURNS,
        "anon": PANTHEON_THROTTLE_ANON,
    },
    "NUM_PROXIES": PANTHEON_NUM_PROXIES,
    "EXCEPTION_HANDLER": "pantheon.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "pantheon.api.schema.PantheonAutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "GET_LIB_DOC_EXCLUDES": "pantheon.api.schema.lib_doc_excludes",
    "TITLE": "Pantheon API",
    "DESCRIPTION": "Rooms of LLM agents: turns, context budgets, usage metering and credits.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "pantheon.api.schema.drop_optional_from_required",
    ],
    "ENUM_NAME_OVERRIDES": {
        "LlmCallStatusEnum": "usage.models.CallStatus",
        "LlmCallPurposeEnum": "usage.models.CallPurpose",
        "LedgerKindEnum": "usage.models.LedgerKind",
        "UsageSourceEnum": "usage.models.UsageSource",
        "TurnModeEnum": "rooms.models.TurnMode",
        "TurnStatusEnum": "sessions.models.TurnStatus",
        "MessageStatusEnum": "sessions.models.MessageStatus",
        "MessageRoleEnum": "sessions.models.MessageRole",
        "SummaryStatusEnum": "sessions.models.SummaryStatus",
    },
    # The docs page works offline: Swagger UI is served from our own static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- LLM ---------------------------------------------------------------------------------------
OPENROUTER_API_KEY = env.str("OPENROUTER_API_KEY", default="")
OPENROUTER_BASE_URL = env.str("OPENROUTER_BASE_URL", default="https://openrouter.ai/api/v1")
# Stored providers take https URLs only (their key travels with every call), or plain http to a
# loopback host; set this to allow plain http to any host (a trusted private network).
PANTHEON_ALLOW_HTTP_PROVIDERS = env.bool("PANTHEON_ALLOW_HTTP_PROVIDERS", default=False)
LLM_CONNECT_TIMEOUT_SECONDS = env.float("LLM_CONNECT_TIMEOUT_SECONDS", default=5.0)
LLM_READ_TIMEOUT_SECONDS = env.float("LLM_READ_TIMEOUT_SECONDS", default=60.0)
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=2)
LLM_RETRY_MAX_WAIT_SECONDS = env.float("LLM_RETRY_MAX_WAIT_SECONDS", default=10.0)
SUMMARY_MODEL = env.str("SUMMARY_MODEL", default="openai/gpt-4o-mini")
# The orchestrator's model for rooms that set no `manager_model`.
ORCHESTRATOR_DEFAULT_MODEL = env.str("ORCHESTRATOR_DEFAULT_MODEL", default="openai/gpt-4o-mini")

CONTEXT_MAX_OUTPUT_TOKENS = env.int("CONTEXT_MAX_OUTPUT_TOKENS", default=2048)
CONTEXT_SUMMARY_TRIGGER_RATIO = env.float("CONTEXT_SUMMARY_TRIGGER_RATIO", default=0.70)
CONTEXT_PRUNE_TRIGGER_RATIO = env.float("CONTEXT_PRUNE_TRIGGER_RATIO", default=0.90)
CONTEXT_MANDATORY_SUMMARY_TURN = env.int("CONTEXT_MANDATORY_SUMMARY_TURN", default=8)
CONTEXT_DEFAULT_MODEL_LIMIT = env.int("CONTEXT_DEFAULT_MODEL_LIMIT", default=8192)
CONTEXT_RECENT_TURNS_TO_KEEP = env.int("CONTEXT_RECENT_TURNS_TO_KEEP", default=4)

TURN_STALE_AFTER_SECONDS = env.int("TURN_STALE_AFTER_SECONDS", default=600)
# A summary claimed by a worker that died is retaken after this long; longer than the task's
# hard time limit, so a live worker's claim is never taken from it.
SUMMARY_CLAIM_LEASE_SECONDS = env.int("SUMMARY_CLAIM_LEASE_SECONDS", default=360)
# Backoff of a summary's retries after a provider error: full jitter up to base * 2**retries
# (the first retry is clamped to 30 s whatever the base; see sessions.tasks.retry_countdown).
SUMMARY_RETRY_BASE_SECONDS = env.float("SUMMARY_RETRY_BASE_SECONDS", default=5.0)
# Streaming: a `: keep-alive` comment after this many seconds of silence.
SSE_HEARTBEAT_SECONDS = env.float("SSE_HEARTBEAT_SECONDS", default=10.0)
ROOM_MAX_AGENTS_PER_TURN = env.int("ROOM_MAX_AGENTS_PER_TURN", default=5)
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)

# --- Agent tools (llm/tools/; product.md "Agent tools") ----------------------------------------
# Model call -> tool calls -> model call, at most this many rounds per agent reply.
TOOL_MAX_ROUNDS = env.int("TOOL_MAX_ROUNDS", default=4)
# One tool call's bound (a worker thread is waited for this long); an HTTP tool's own timeout
# may only be shorter.
TOOL_TIMEOUT_SECONDS = env.float("TOOL_TIMEOUT_SECONDS", default=10.0)
# A tool result longer than this is cut, with a marker saying so.
TOOL_RESULT_MAX_CHARS = env.int("TOOL_RESULT_MAX_CHARS", default=8000)
# An HTTP tool's response is read up to this many bytes; a longer one is an error result.
TOOL_HTTP_MAX_RESPONSE_BYTES = env.int("TOOL_HTTP_MAX_RESPONSE_BYTES", default=1_048_576)
# Host names HTTP tools may call (comma-separated). Empty: every HTTP tool is refused.
TOOL_HTTP_ALLOWED_HOSTS = env.list("TOOL_HTTP_ALLOWED_HOSTS", default=[])
# Installed langchain-core tools: import paths ("package.module:attribute"), comma-separated.
PANTHEON_TOOLS = env.list("PANTHEON_TOOLS", default=[])
for _name in ("TOOL_MAX_ROUNDS", "TOOL_RESULT_MAX_CHARS", "TOOL_HTTP_MAX_RESPONSE_BYTES"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more.")
if TOOL_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("TOOL_TIMEOUT_SECONDS must be more than 0 seconds.")

# --- Per-process caches (pantheon/process_cache.py; README "Freshness of cached data") ---------
# How old a cached value may be when it is used; 0 turns that cache off.
PRICING_CACHE_SECONDS = env.int("PRICING_CACHE_SECONDS", default=60)
CATALOG_CACHE_SECONDS = env.int("CATALOG_CACHE_SECONDS", default=30)
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=5)
# A pricing version is published at least this long before it takes effect. Longer than the
# price cache, so every process has loaded a version before its first call is priced by it.
PRICING_PUBLISH_LEAD_SECONDS = env.int("PRICING_PUBLISH_LEAD_SECONDS", default=120)
for _name in (
    "PRICING_CACHE_SECONDS",
    "CATALOG_CACHE_SECONDS",
    "API_KEY_CACHE_SECONDS",
    "PRICING_PUBLISH_LEAD_SECONDS",
):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 or more seconds.")
if PRICING_PUBLISH_LEAD_SECONDS <= PRICING_CACHE_SECONDS and (
    PRICING_PUBLISH_LEAD_SECONDS or PRICING_CACHE_SECONDS
):
    raise ImproperlyConfigured(
        f"PRICING_PUBLISH_LEAD_SECONDS ({PRICING_PUBLISH_LEAD_SECONDS}) must be greater than "
        f"PRICING_CACHE_SECONDS ({PRICING_CACHE_SECONDS}): a process could still be pricing "
        "calls with its old table when a new version takes effect. Both may be 0 (no price "
        "cache, no lead)."
    )

# --- Celery ------------------------------------------------------------------------------------
# Empty means "no broker" (scripts/run.sh sets that when Redis does not answer): nothing connects
# to a broker, summaries are generated in the web process after the turn's commit
# (`summary_enqueue`), and there is no beat. A configured broker that is down is another case:
# summaries stay `pending` until the sweep.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Logging -----------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# `json`: one JSON object per line (request id, method, path, status, duration, user id — never
# secrets, never prompt text); `plain` for reading in a terminal.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "class": "pantheon.api.logging.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "pantheon.api.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "pantheon.request": {"level": "INFO"},
        "pantheon.provider": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_DEFAULT_QUEUE = "default"
# Longer than any task's hard limit and any retry countdown, or Redis re-delivers a running task.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_connect_timeout": 1,
    "socket_timeout": 5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "sweep-pending-summaries": {
        "task": "sessions.tasks.sweep_pending_summaries",
        "schedule": env.float("SWEEP_SUMMARIES_EVERY_SECONDS", default=60.0),
    },
    "sweep-stale-turns": {
        "task": "sessions.tasks.sweep_stale_turns",
        "schedule": env.float("SWEEP_STALE_TURNS_EVERY_SECONDS", default=60.0),
    },
    "expire-reservations": {
        "task": "usage.expire_reservations",
        "schedule": env.float("EXPIRE_RESERVATIONS_EVERY_SECONDS", default=300.0),
    },
    "purge-idempotency-keys": {
        "task": "sessions.tasks.purge_idempotency_keys",
        "schedule": env.float("PURGE_IDEMPOTENCY_KEYS_EVERY_SECONDS", default=3600.0),
    },
}
