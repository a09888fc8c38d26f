"""Shared test setup: nothing reaches the network, no real tracing."""

import os

# Tracing is tested against a recorder on 127.0.0.1, never the real service.
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGSMITH_TEST_TRACKING"] = "false"
os.environ.pop("OPENAI_API_KEY", None)

# One pinned "today" for every lifecycle check (m3rec_graph.llm.registry.today), in this
# process and in the servers and CLIs the tests start: no test reads the wall clock, so
# the suite stays green after the models it routes shut down. Tests of the lifecycle
# itself pass their own dates.
PINNED_TODAY = "2026-12-03"
os.environ["M3REC_TODAY"] = PINNED_TODAY

# postgres_server / postgres_url: a real throwaway PostgreSQL on 127.0.0.1 (`make postgres`).
pytest_plugins = ["tests.postgres_server"]
