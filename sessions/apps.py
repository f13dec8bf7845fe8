from django.apps import AppConfig


class ChatSessionsConfig(AppConfig):
    """Chat sessions. Labelled `chat_sessions`: `sessions` is django.contrib.sessions' label."""

    name = "sessions"
    label = "chat_sessions"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # `session_search` needs this app's data: it registers itself with the tool registry.
        from llm.tools.registry import register_tool
        from sessions.tools import DESCRIPTION, session_search_tool

        register_tool(
            "session_search", session_search_tool, description=DESCRIPTION, kind="builtin"
        )
