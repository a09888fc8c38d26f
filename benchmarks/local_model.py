"""The offline default model on this machine: start-up, throughput, seconds per recommendation.

Usage: `python -m benchmarks.local_model [--users 3] [--candidates 20]`

Starts its own llama.cpp server (xllamacpp, SmolLM2-135M-Instruct) on a free
127.0.0.1 port, measures raw prefill/decode speed from the server's own
timings, then runs the demo users through the full graph twice: once with an
empty trait cache (cold) and once again (warm: MOTE fully cached).
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from m3rec_graph import SqliteTraitCache, build_graph, context_for
from m3rec_graph.cli.demo import load_cases
from m3rec_graph.local.server import ServerSettings, start_server
from m3rec_graph.state import RecInput


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chat(url: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
         "temperature": 0}
    ).encode()
    req = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _recommend(requests: list[RecInput], cache: SqliteTraitCache) -> list[tuple[float, int, int]]:
    graph = build_graph(trait_cache=cache)
    ctx = context_for("local", fusion="off")  # the LLM pipeline itself, not the fused default
    results = []
    for request in requests:
        started = time.perf_counter()
        out = await graph.ainvoke(request, context=ctx)
        usage = out["usage"]
        results.append((time.perf_counter() - started, usage.total.calls, len(out["degraded"])))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=ServerSettings().n_parallel, help="server slots")
    parser.add_argument("--threads", type=int, default=ServerSettings().n_threads, help="server threads")
    args = parser.parse_args()

    url = f"http://127.0.0.1:{_free_port()}/v1"
    os.environ["M3REC_LOCAL_URL"] = url
    started = time.perf_counter()
    server = start_server(url, ServerSettings(n_parallel=args.parallel, n_threads=args.threads))
    startup_s = time.perf_counter() - started
    try:
        _chat(url, "hi", 4)  # warm-up
        long_prompt = ("The quick brown fox jumps over the lazy dog. " * 40) + "Summarise in one word."
        prefill = _chat(url, long_prompt, 1)
        decode = _chat(url, "Write a long story about a robot who learns to paint.", 128)
        cases = load_cases()[: args.users]
        requests = [
            cast(RecInput, {"user_id": c["user_id"], "history": c["history"],
                            "candidates": c["candidates"][: args.candidates]})
            for c in cases
        ]
        with tempfile.TemporaryDirectory() as tmp:
            cache = SqliteTraitCache(Path(tmp) / "traits.sqlite")
            cold = asyncio.run(_recommend(requests, cache))
            warm = asyncio.run(_recommend(requests, cache))
        rss = _rss_mb(server.process.pid)
    finally:
        server.stop()

    def row(name: str, runs: list[tuple[float, int, int]]) -> str:
        secs = [r[0] for r in runs]
        return (f"| {name} | {statistics.median(secs):.1f} | {max(secs):.1f} | "
                f"{statistics.mean(r[1] for r in runs):.1f} | {sum(r[2] for r in runs)} |")

    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at the end; xllamacpp {metadata.version('xllamacpp')}, "
          f"langgraph {metadata.version('langgraph')}")
    print(f"server: {args.parallel} parallel slot(s), {args.threads} thread(s); start-up to /health: {startup_s:.2f} s; server RSS after the run: {rss:.0f} MB")
    pt, dt = prefill.get("timings", {}), decode.get("timings", {})
    print(f"prefill: {prefill['usage']['prompt_tokens']} tokens at {pt.get('prompt_per_second', 0):.0f} tok/s; "
          f"decode: {decode['usage']['completion_tokens']} tokens at {dt.get('predicted_per_second', 0):.0f} tok/s "
          "(server timings, 1 request)")
    print(f"\nper recommendation, {args.users} demo users x {args.candidates} candidates, listwise MAR:")
    print("| trait cache | median s | max s | LLM calls | degraded results |")
    print("|---|---|---|---|---|")
    print(row("cold (every item encoded)", cold))
    print(row("warm (MOTE cached)", warm))


if __name__ == "__main__":
    main()
