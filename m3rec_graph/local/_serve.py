"""Subprocess entry point: run llama.cpp's server (xllamacpp) until terminated.

Usage: `python -m m3rec_graph.local._serve MODEL.gguf PORT N_PARALLEL N_CTX N_THREADS`.
It runs in its own process because `xllamacpp.Server` has no stop method.
"""

import signal
import sys
import time

import xllamacpp


def main(argv: list[str]) -> None:
    """Start the server with the given settings and sleep until SIGTERM."""
    model, port, n_parallel, n_ctx, n_threads = argv
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = int(n_ctx)  # total KV size, split across the slots
    params.n_parallel = int(n_parallel)
    params.cpuparams.n_threads = int(n_threads)
    params.cpuparams_batch.n_threads = int(n_threads)
    params.hostnames = ["127.0.0.1"]
    params.port = int(port)
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
