"""Subprocess entry point: run llama.cpp's server (xllamacpp) until terminated.

Usage: `python -m m3rec_graph.local._serve MODEL.gguf PORT N_PARALLEL N_CTX N_THREADS`.
It runs in its own process because `xllamacpp.Server` has no stop method.
"""

import os
import signal
import sys
import time

import xllamacpp


def main(argv: list[str]) -> None:
    """Start the server and serve until SIGTERM or until the process that started it exits."""
    model, port, n_parallel, n_ctx, n_threads = argv
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = int(n_ctx)  # total KV size, split across the slots
    params.n_parallel = int(n_parallel)
    params.cpuparams.n_threads = int(n_threads)
    params.cpuparams_batch.n_threads = int(n_threads)
    params.hostnames = ["127.0.0.1"]
    params.port = int(port)
    parent = os.getppid()
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    # os._exit: the native server's threads would otherwise keep the process alive.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # Exit with the process that started us, even if it was killed before it could stop us.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
