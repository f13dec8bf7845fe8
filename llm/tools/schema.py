"""Checks of an HTTP tool's definition, shared by the model (save time) and the runner (run time).

Pure functions over settings: no model import, so `llm.models` may use them."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from llm.json_schema import SCHEMA_ANNOTATIONS, SCHEMA_KEYWORDS

# What OpenAI-compatible APIs accept as a function name.
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_SCHEMA_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
# The keywords `llm.json_schema.schema_errors` checks arguments against, and the annotations it
# ignores, are those a tool's parameters may use.
_MAX_SCHEMA_DEPTH = 16


def _is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (as `llm.models` judges provider URLs)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(url: str) -> str:
    """The URL's host name, lower-cased ("" when it has none)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def http_tool_url_error(url: str) -> str | None:
    """Why an HTTP tool may not call `url` now, or None when it may.

    The host must be listed in `TOOL_HTTP_ALLOWED_HOSTS` (read at every call: the setting may
    change after the tool was saved). Arguments and the secret header travel with the request, so
    the rule of provider URLs applies too: https, or plain http only to a loopback host or when
    `PANTHEON_ALLOW_HTTP_PROVIDERS` allows it everywhere."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "The URL cannot be parsed."
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return "Use an http(s):// URL with a host name."
    allowed = {h.strip().lower() for h in settings.TOOL_HTTP_ALLOWED_HOSTS if h and h.strip()}
    if host not in allowed:
        listed = ", ".join(sorted(allowed)) or "none: the setting is empty"
        return (
            f"The host {host!r} is not in TOOL_HTTP_ALLOWED_HOSTS (allowed: {listed}). "
            "HTTP tools may only call hosts the operator lists there."
        )
    if scheme == "http" and not (settings.PANTHEON_ALLOW_HTTP_PROVIDERS or _is_loopback(host)):
        return (
            "Use an https:// URL: plain http is allowed only to a loopback host (localhost, "
            "127.0.0.0/8, ::1) unless PANTHEON_ALLOW_HTTP_PROVIDERS is set."
        )
    return None


def parameters_schema_errors(schema: Any) -> list[str]:
    """Why `schema` is not a usable parameter schema (empty list: it is).

    A tool's parameters are a JSON schema of `"type": "object"`, written in the subset of
    keywords `llm.json_schema` validates arguments against, so every call is checked before it
    runs."""
    if not isinstance(schema, dict):
        return ["The parameters must be a JSON object (a JSON schema)."]
    errors: list[str] = []
    if schema.get("type") != "object":
        errors.append('The parameters schema must have "type": "object".')
    _walk(schema, "$", errors, depth=0)
    return errors


def _walk(schema: Any, path: str, errors: list[str], *, depth: int) -> None:
    if depth > _MAX_SCHEMA_DEPTH:
        errors.append(f"{path}: nested deeper than {_MAX_SCHEMA_DEPTH} levels")
        return
    if not isinstance(schema, dict):
        errors.append(f"{path}: a schema must be a JSON object")
        return
    unknown = set(schema) - SCHEMA_KEYWORDS - SCHEMA_ANNOTATIONS
    if unknown:
        errors.append(f"{path}: unsupported keyword(s) {sorted(unknown)}")
    declared = schema.get("type")
    if declared is not None:
        types = [declared] if isinstance(declared, str) else declared
        if (
            not isinstance(types, list)
            or not types
            or not all(isinstance(t, str) and t in _SCHEMA_TYPES for t in types)
        ):
            errors.append(f"{path}: unknown type {declared!r}")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        errors.append(f"{path}: properties must be an object")
        properties = {}
    for name, child in properties.items():
        _walk(child, f"{path}.{name}", errors, depth=depth + 1)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        errors.append(f"{path}: required must be a list of property names")
    elif missing := [n for n in required if n not in properties]:
        errors.append(f"{path}: required names undeclared properties {missing}")
    additional = schema.get("additionalProperties", True)
    if isinstance(additional, dict):
        _walk(additional, f"{path}.<additional>", errors, depth=depth + 1)
    elif not isinstance(additional, bool):
        errors.append(f"{path}: additionalProperties must be true, false or a schema")
    if "items" in schema:
        _walk(schema["items"], f"{path}[]", errors, depth=depth + 1)
    if "anyOf" in schema:
        branches = schema["anyOf"]
        if not isinstance(branches, list) or not branches:
            errors.append(f"{path}: anyOf must be a non-empty list of schemas")
        else:
            for index, branch in enumerate(branches):
                _walk(branch, f"{path}.anyOf[{index}]", errors, depth=depth + 1)
    if "enum" in schema and not isinstance(schema["enum"], list):
        errors.append(f"{path}: enum must be a list")
    for keyword in ("minItems", "maxItems", "minLength", "maxLength"):
        value = schema.get(keyword)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(f"{path}: {keyword} must be an integer")
    for keyword in ("minimum", "maximum"):
        value = schema.get(keyword)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors.append(f"{path}: {keyword} must be a number")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError):
            errors.append(f"{path}: pattern is not a valid regular expression")
