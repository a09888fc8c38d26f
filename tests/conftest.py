"""Shared test setup: nothing reaches the network, no real tracing."""

import os

# Tracing is tested against a recorder on 127.0.0.1, never the real service.
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGSMITH_TEST_TRACKING"] = "false"
os.environ.pop("OPENAI_API_KEY", None)
