"""Query filters for the caller's call events (`GET usage/events`). Invalid values are a 400
`validation_error` naming the parameter (django-filter's backend raises, the handler renders)."""

from __future__ import annotations

from datetime import date

import django_filters
from django.db.models import QuerySet

from usage.models import CallPurpose, CallStatus, LlmCallEvent
from usage.selectors import events_between

# An empty value is a mistake, not "no filter": the schema gives every parameter a type.
EMPTY_NOT_ALLOWED = ("session", "purpose", "status", "from", "to")


class LlmCallEventFilter(django_filters.FilterSet):
    """`?session=&purpose=&status=&model=&from=&to=`; `from` and `to` are dates (UTC days,
    both inclusive), compared as a half-open range on `created_at` so the index is used."""

    session = django_filters.UUIDFilter(field_name="session_id", help_text="A session id.")
    purpose = django_filters.ChoiceFilter(choices=CallPurpose.choices)
    status = django_filters.ChoiceFilter(choices=CallStatus.choices)
    model = django_filters.CharFilter(field_name="model", help_text="A model id.")
    date_from = django_filters.DateFilter(
        method="filter_from", help_text="First day (inclusive, UTC), YYYY-MM-DD."
    )
    date_to = django_filters.DateFilter(
        method="filter_to", help_text="Last day (inclusive, UTC), YYYY-MM-DD."
    )

    class Meta:
        model = LlmCallEvent
        fields: list[str] = []

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name in EMPTY_NOT_ALLOWED:
            if self.data.get(name) == "":
                self.form.add_error(name, "Must not be empty.")
                valid = False
        return valid

    def filter_from(self, queryset: QuerySet, name: str, value: date) -> QuerySet:
        return events_between(queryset, date_from=value, date_to=None)

    def filter_to(self, queryset: QuerySet, name: str, value: date) -> QuerySet:
        return events_between(queryset, date_from=None, date_to=value)


# `from` is a Python keyword, so the two date filters are declared under other names and
# exposed under the contract's parameter names.
LlmCallEventFilter.base_filters["from"] = LlmCallEventFilter.base_filters.pop("date_from")
LlmCallEventFilter.base_filters["to"] = LlmCallEventFilter.base_filters.pop("date_to")
