"""Benchmark of the teacher client: concurrency, cache speed and cache memory.

    python benchmarks/teacher.py            # writes metrics/bench_teacher.json

1. Throughput against a local OpenAI-compatible server (in its own process) that answers after
   100 ms, at concurrency 1, 8, 32 and 64, as a ratio to the ideal ``concurrency / latency``
   (target: >= 0.8 at 32). Concurrency 1 is the sequential baseline: ``speedup`` is the throughput
   at 32 over the throughput at 1, measured side by side in this run.
2. The same requests again, fully cached: completions served per second (target: >= 5,000).
3. Peak memory of a process that opens a cache of 100,000 completions and serves them all,
   against one of 10,000 (target: flat, under 300 MB).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ftcot.io import write_json
from ftcot.teachers import CompletionCache, CompletionRequest
from ftcot.teachers.base import Completion
from ftcot.teachers.cache import cache_key
from ftcot.teachers.openai_compat import OpenAITeacher
from ftcot.teaching import TeachRunStats, resolve

LATENCY = 0.1
REPO = Path(__file__).resolve().parents[1]


def serve(port_queue: mp.Queue) -> None:
    """An OpenAI-compatible chat endpoint that answers every request after LATENCY seconds.

    asyncio (aiohttp) rather than a thread per connection, so that the server's own CPU cost does
    not hide the client's: the benchmark measures the client.
    """
    import asyncio

    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(LATENCY)
        text = f" Answer to {body['messages'][-1]['content'][-20:]!r}."
        return web.json_response(
            {
                "id": "cmpl",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        port_queue.put(f"http://127.0.0.1:{port}/v1")
        await asyncio.Event().wait()

    asyncio.run(main())


def requests_for(n: int, tag: str) -> list[CompletionRequest]:
    return [CompletionRequest(f"Q: {tag} question {i}?\nA: Let's think step by step.", 0, 0.0, 32) for i in range(n)]


def measure_throughput(base_url: str, concurrency: int, n: int, cache_dir: Path) -> dict:
    teacher = OpenAITeacher("fake", base_url=base_url, api_key_env=None, concurrency=concurrency, max_retries=2)
    cache = CompletionCache(cache_dir)
    requests = requests_for(n, f"c{concurrency}")
    stats = TeachRunStats()
    start = time.perf_counter()
    resolve(requests, teacher, cache, stats, desc=f"concurrency {concurrency}")
    seconds = time.perf_counter() - start
    throughput = n / seconds
    ideal = concurrency / LATENCY
    return {
        "requests": n,
        "seconds": round(seconds, 3),
        "per_second": round(throughput, 1),
        "ideal_per_second": ideal,
        "ratio_to_ideal": round(throughput / ideal, 3),
    }


def measure_cached(base_url: str, n: int, cache_dir: Path) -> dict:
    teacher = OpenAITeacher("fake", base_url=base_url, api_key_env=None, concurrency=64)
    cache = CompletionCache(cache_dir)
    requests = requests_for(n, "c64")  # answered during the throughput runs
    stats = TeachRunStats()
    start = time.perf_counter()
    resolve(requests, teacher, cache, stats)
    seconds = time.perf_counter() - start
    assert stats.requests_sent == 0 and stats.cache_hits == n
    return {"completions": n, "seconds": round(seconds, 4), "per_second": round(n / seconds, 1)}


def fill_cache(directory: Path, n: int) -> None:
    cache = CompletionCache(directory)
    completion = Completion(" Reasoning. " * 20, "stop", 40, 60)
    for request in requests_for(n, "mem"):
        cache.put_completion(cache_key("bench", "fake", request), "bench", "fake", request, completion)


def peak_rss_mb_serving(directory: Path, n: int) -> dict:
    """Peak RSS of a fresh process that opens the cache and reads every completion once."""
    code = f"""
import sys
from ftcot.teachers import CompletionCache
from ftcot.teachers.cache import cache_key
sys.path.insert(0, {str(REPO / "benchmarks")!r})
from teacher import requests_for, rss_mb
before = rss_mb()["VmRSS"]
cache = CompletionCache({str(directory)!r})
assert len(cache) == {n}
for r in requests_for({n}, "mem"):
    assert cache.get_completion(cache_key("bench", "fake", r)) is not None
now = rss_mb()
print(before, now["VmRSS"], now["VmHWM"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, peak = (float(x) for x in out)
    return {
        "completions": n,
        "peak_rss_mb": round(peak, 1),
        "rss_before_open_mb": round(before, 1),
        "rss_after_serving_mb": round(after, 1),
        "added_mb": round(after - before, 1),
    }


def rss_mb() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, in MB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", default=str(REPO / "metrics" / "bench_teacher.json"))
    args = parser.parse_args()

    queue: mp.Queue = mp.Queue()
    server = mp.Process(target=serve, args=(queue,), daemon=True)
    server.start()
    base_url = queue.get(timeout=30)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            throughput = {}
            for c in (1, 8, 32, 64):
                # Sequential requests cost 100 ms each: 200 of them (20 s) measure concurrency 1.
                n = min(args.requests, 200 * c)
                throughput[str(c)] = measure_throughput(base_url, c, n, Path(tmp) / "cache")
            results["throughput"] = throughput
            results["cached"] = measure_cached(base_url, min(args.requests, 200 * 64), Path(tmp) / "cache")
        finally:
            server.kill()
        fill_cache(Path(tmp) / "mem10k", 10_000)
        fill_cache(Path(tmp) / "mem100k", 100_000)
        small = peak_rss_mb_serving(Path(tmp) / "mem10k", 10_000)
        large = peak_rss_mb_serving(Path(tmp) / "mem100k", 100_000)
    results["memory"] = {
        "10000": small,
        "100000": large,
        "growth_mb_per_10k_completions": round((large["added_mb"] - small["added_mb"]) / 9, 2),
    }
    seq = results["throughput"]["1"]["per_second"]
    results["speedup"] = round(results["throughput"]["32"]["per_second"] / seq, 2)
    results["speedup_definition"] = "throughput at concurrency 32 / sequential throughput (concurrency 1)"
    results["targets"] = {
        "ratio_to_ideal_at_32": {"target": 0.8, "measured": results["throughput"]["32"]["ratio_to_ideal"]},
        "cached_per_second": {"target": 5000, "measured": results["cached"]["per_second"]},
        "peak_rss_mb_100k": {"target": 300, "measured": large["peak_rss_mb"]},
    }
    results["machine"] = {
        "cores": os.cpu_count(),
        "device": "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server_latency_s": LATENCY,
    }
    write_json(args.out, results)
    print(json.dumps(results["targets"], indent=2), f"\nspeedup {results['speedup']}x -> {args.out}")


if __name__ == "__main__":
    main()
