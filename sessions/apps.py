from django.apps import AppConfig


class ChatSessionsConfig(AppConfig):
    """Chat sessions. Labelled `chat_sessions`: `sessions` is django.contrib.sessions' label."""

    name = "sessions"
    label = "chat_sessions"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"
