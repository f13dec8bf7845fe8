"""Agent tools on langchain-core: the registry (`llm.tools.registry`), the pure built-ins
(`llm.tools.builtins`) and staff-defined HTTP tools (`llm.tools.http`).

Import the modules themselves (`from llm.tools.registry import tool_run`): this package's
`__init__` imports nothing, so `llm.models` can use `llm.tools.schema` without a cycle."""
