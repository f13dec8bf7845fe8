"""System checks of the tool settings: `manage.py check` (and every server start) reports a bad
`PANTHEON_TOOLS` entry before an agent's first call would."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register()
def check_installed_tools(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from llm.tools.registry import installed_tools

    try:
        installed_tools()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint=(
                    "Each PANTHEON_TOOLS entry is an import path (package.module:attribute) of a "
                    "langchain-core tool: a BaseTool instance or a function decorated with @tool."
                ),
                id="llm.E001",
            )
        ]
    return []
