"""Test support, not part of the product (the wheel does not install it): the stub
OpenAI-compatible LLM server, factories, fault injectors (database, Redis), server and Celery
worker starters. Used by the test suite and the benchmarks, which run from the project root."""
