"""Views of the llm API: the model catalog and the tools agents may be given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from llm.api.serializers import ModelConfigSerializer, ToolSerializer
from llm.selectors import model_list_active
from llm.tools.registry import available_tools
from pantheon.api.views import PaginatedAPIView

# Given the model ids of one page: `{model_id: {bucket: USD per 1M tokens}}`.
PricesFor = Callable[[list[str]], dict[str, dict[str, Any]]]


class ModelListView(PaginatedAPIView):
    """`GET /api/v1/models`: the active catalog, paginated.

    Prices live in the usage app, which llm must not import: the project's URL conf passes
    their reader in, `ModelListView.as_view(prices_for=...)`, called once per page. Without one
    every model's `prices` is `{}`.
    """

    prices_for: PricesFor | None = None

    @extend_schema(
        operation_id="models_list",
        summary="The model catalog",
        description="Active models: context window, output limit, structured-output support "
        "and current prices (USD per 1M tokens, by token bucket).",
        responses=ModelConfigSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        models = self.paginate(model_list_active())
        hook = self.prices_for
        prices = hook([model.id for model in models]) if hook is not None else {}
        serializer = ModelConfigSerializer(models, many=True, context={"prices": prices})
        return self.page_response(serializer.data)


class ToolListView(PaginatedAPIView):
    """`GET /api/v1/tools`: the tools an agent may be given."""

    @extend_schema(
        operation_id="tools_list",
        summary="The tools agents may be given",
        description="Every tool an agent's `tools` may name: the built-ins (`calculator`, "
        "`current_time`, `session_search`), tools installed by the operator and HTTP tools "
        "staff defined; each with its description and the JSON schema of its arguments, as "
        "the model sees them. While an agent replies, the model may call its tools; each call "
        "is run by Pantheon and shown in the reply's `tool_calls`.",
        responses=ToolSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        tools = self.paginate(sorted(available_tools(), key=lambda tool: tool.name))
        return self.page_response(ToolSerializer(tools, many=True).data)
