"""Views of the llm API: the model catalog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from llm.api.serializers import ModelConfigSerializer
from llm.selectors import model_list_active

PricesFor = Callable[[list[str]], dict[str, dict[str, Any]]]


class ModelListView(ListAPIView):
    """`GET /api/v1/models`: the active catalog, paginated.

    `prices_for` is the pricing hook (llm knows nothing of pricing): given the model ids of one
    page it returns `{model_id: {bucket: USD per 1M tokens}}`, called once per page. Left None,
    every model's `prices` is `{}`. Wire it with `ModelListView.as_view(prices_for=fn)`.
    """

    serializer_class = ModelConfigSerializer
    prices_for: ClassVar[PricesFor | None] = None

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return model_list_active()

    def _prices_hook(self) -> PricesFor | None:
        # as_view(prices_for=...) sets an instance attribute; a class attribute is read off the
        # class so a plain function is not bound as a method.
        return self.__dict__.get("prices_for") or type(self).prices_for

    @extend_schema(
        operation_id="models_list",
        summary="The model catalog",
        description="Active models: context window, output limit, structured-output support "
        "and current prices (USD per 1M tokens, by token bucket).",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.get_queryset()
        page = self.paginate_queryset(queryset)
        models = list(queryset) if page is None else page
        hook = self._prices_hook()
        prices = hook([model.id for model in models]) if hook is not None else {}
        serializer = self.get_serializer(models, many=True, context={"prices": prices})
        if page is None:
            return Response(serializer.data)
        return self.get_paginated_response(serializer.data)

    def get_serializer(self, *args: Any, **kwargs: Any) -> ModelConfigSerializer:
        extra = kwargs.pop("context", {})
        kwargs["context"] = {**self.get_serializer_context(), **extra}
        return self.serializer_class(*args, **kwargs)
