"""Test doubles: fake servers that speak the real protocols over HTTP, and in-process fakes."""

import pytest

# openai_server is also a pytest plugin (its fixtures); registering it for assertion rewriting
# before anything imports it keeps pytest from warning when a test module imports it first.
pytest.register_assert_rewrite("tests.fakes.openai_server")
