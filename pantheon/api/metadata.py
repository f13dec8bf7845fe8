"""What `OPTIONS` answers on API views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.metadata import SimpleMetadata

if TYPE_CHECKING:  # DRF imports this module while `rest_framework.views` is still loading
    from rest_framework.request import Request
    from rest_framework.views import APIView


class MinimalMetadata(SimpleMetadata):
    """Name, description, renderers and parsers — without DRF's `actions`, which instantiates
    the view's serializer (and, for PUT, loads the object) outside the view's own code paths:
    a view that picks its serializer per method crashes there (500), and the OpenAPI schema
    already describes every body truthfully."""

    def determine_metadata(self, request: Request, view: APIView) -> dict[str, Any]:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
        }
