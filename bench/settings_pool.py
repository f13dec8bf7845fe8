"""What-if settings for the bench: Pantheon's settings plus psycopg's connection pool instead
of persistent connections — the change proposed for pantheon/settings.py.

Under ASGI every request runs in a thread of its own, so `CONN_MAX_AGE` keeps one connection
per finished thread open until it expires: under load the server runs out of PostgreSQL
connections (`FATAL: sorry, too many clients already`, answered 500). A pool shares a bounded
set of connections. Measure it with `bash bench/run.sh --settings bench.settings_pool`.
"""

from pantheon.settings import *  # noqa: F403
from pantheon.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": 2, "max_size": 16, "timeout": 10}
