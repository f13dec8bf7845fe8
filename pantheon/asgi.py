"""ASGI entry point: `gunicorn --preload -k uvicorn_worker.UvicornWorker pantheon.asgi:application`.

The application is Django's ASGI handler with the middleware chain and the view in one thread
hop (`pantheon.asgi_handler`), wrapped so that every request learns when its client hangs up,
even before its response starts (`watch_disconnect`).

With `--preload` gunicorn imports this module once, in the master, and forks the workers from
it: what is loaded here is shared by all of them, copy-on-write. So besides Django, the apps and
the middleware chain, it loads what every worker would otherwise load for itself on its first
requests: the URLconf (every view, serializer and service module, the `openai` SDK) and the
tokenizer's tables (~46 MiB that nothing writes to). None of that opens a connection, a socket
or a thread (pantheon/tests/test_preload.py): the database pool, Redis, the broker and the
`openai` clients are made by each worker on first use.

Then the objects loaded so far are frozen out of the garbage collector (`gc.freeze`, which the
Python documentation recommends before forking): a worker's full collection would otherwise
touch every one of them and copy every page they sit on (about 40 MiB per worker, measured).
Being module-level, they were never going to be collected anyway.
"""

import gc
import os
from importlib import import_module

from pantheon.api.presence import watch_disconnect
from pantheon.asgi_handler import get_one_hop_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

application = watch_disconnect(get_one_hop_asgi_application())


def _load_what_every_worker_uses() -> None:
    from django.conf import settings

    from llm.tokenizer import get_encoding

    import_module(settings.ROOT_URLCONF)
    get_encoding()


_load_what_every_worker_uses()
gc.collect()
gc.freeze()
