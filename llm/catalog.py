"""The initial model catalog: common OpenRouter models with their real context windows and output
limits. Loaded by a data migration; staff edit the catalog in the admin afterwards."""

from __future__ import annotations

# (id, display name, context window, max output tokens, structured output)
INITIAL_MODELS: list[tuple[str, str, int, int, bool]] = [
    ("openai/gpt-4o-mini", "GPT-4o mini", 128_000, 16_384, True),
    ("openai/gpt-4o", "GPT-4o", 128_000, 16_384, True),
    ("openai/gpt-4.1", "GPT-4.1", 1_047_576, 32_768, True),
    ("openai/gpt-4.1-mini", "GPT-4.1 mini", 1_047_576, 32_768, True),
    ("openai/o3-mini", "o3-mini", 200_000, 100_000, True),
    ("openai/gpt-3.5-turbo", "GPT-3.5 Turbo", 16_385, 4_096, True),
    ("anthropic/claude-3.5-haiku", "Claude 3.5 Haiku", 200_000, 8_192, True),
    ("anthropic/claude-sonnet-4", "Claude Sonnet 4", 200_000, 64_000, True),
    ("google/gemini-2.0-flash-001", "Gemini 2.0 Flash", 1_048_576, 8_192, True),
    ("google/gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536, True),
    ("meta-llama/llama-3.3-70b-instruct", "Llama 3.3 70B Instruct", 131_072, 16_384, True),
    ("mistralai/mistral-7b-instruct", "Mistral 7B Instruct", 32_768, 8_192, False),
    ("qwen/qwen-2.5-7b-instruct", "Qwen 2.5 7B Instruct", 32_768, 8_192, True),
    ("deepseek/deepseek-chat", "DeepSeek V3", 163_840, 16_384, True),
]
