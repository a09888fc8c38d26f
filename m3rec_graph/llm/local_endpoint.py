"""Where the offline default model answers: the local llama.cpp server's OpenAI-compatible URL.

Routing needs only this address; starting and stopping the server is `m3rec_graph.local`'s job.
"""

import os

DEFAULT_PORT = 8765


def local_base_url() -> str:
    """Return the OpenAI-compatible base URL of the local server (`M3REC_LOCAL_URL` overrides)."""
    return os.environ.get("M3REC_LOCAL_URL", f"http://127.0.0.1:{DEFAULT_PORT}/v1")
