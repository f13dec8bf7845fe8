"""Walking a table by primary key (pantheon.db.pk_batches)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from pantheon.db import pk_batches
from testing.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def walked() -> list[User]:
    return [make_user(email=f"walk{n}@example.com") for n in range(7)]


def test_every_row_comes_once_in_primary_key_order_by_keyset_pages(walked: list[User]) -> None:
    # The queryset's own ordering is replaced by the primary key's.
    rows = User.objects.filter(email__startswith="walk").order_by("-email")

    with CaptureQueriesContext(connection) as queries:
        batches = list(pk_batches(rows, batch_size=3))

    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert [user.pk for batch in batches for user in batch] == sorted(user.pk for user in walked)
    # Three pages and the empty one that ends the walk; each page after the first starts after
    # the last key seen, never at an OFFSET.
    assert len(queries.captured_queries) == 4
    sql = [query["sql"] for query in queries.captured_queries]
    assert not any("OFFSET" in statement.upper() for statement in sql)
    assert all('"id" >' in statement for statement in sql[1:])


def test_deleting_each_batch_as_it_is_walked_skips_nothing(walked: list[User]) -> None:
    rows = User.objects.filter(email__startswith="walk")
    seen = []

    for batch in pk_batches(rows, batch_size=2):
        seen.extend(user.pk for user in batch)
        User.objects.filter(pk__in=[user.pk for user in batch]).delete()

    assert sorted(seen) == sorted(user.pk for user in walked)
    assert not rows.exists()
