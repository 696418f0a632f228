"""Benchmark of the teacher client and of its completion store, up to the paper's largest runs.

    python benchmarks/teacher.py                 # writes metrics/bench_teacher.json
    python benchmarks/teacher.py --store-sizes 100000   # quicker: the store at 100k only

1. Throughput against a local OpenAI-compatible server (in its own process) that answers after
   100 ms, at concurrency 1, 8, 32 and 64, as a ratio to the ideal ``concurrency / latency``
   (target: >= 0.8 at 32). Concurrency 1 is the sequential baseline: ``speedup`` is the throughput
   at 32 over the throughput at 1, measured side by side in this run.
2. The same requests again, fully cached, through ``resolve``: completions served per second
   (target: >= 5,000).
3. The store at 100,000 and 1,000,000 completions of realistic size (a 350-character prompt, a
   400-character rationale), each figure from a fresh process: seconds to open it (target: < 1 s),
   peak memory while looking up 200,000 random keys (target: < 300 MB), lookups per second, in
   batches as ``resolve`` makes them and one key at a time (target: >= 20,000/s), and appends per
   second from two processes at once, after which every record is read back whole. The baseline,
   side by side: the store of earlier versions (one JSONL file, an in-memory index of byte offsets
   built by scanning the file at open), opened and queried the same way; ``open_speedup`` is its
   open time over ours.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ftcot.io import write_json
from ftcot.teacher.base import Completion, CompletionRequest
from ftcot.teacher.cache import CompletionCache, cache_key
from ftcot.teacher.openai_compat import OpenAITeacher
from ftcot.teacher.teaching import TeachRunStats, resolve

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
    completion = Completion(" Reasoning. " * 20, "stop", 40, 60)
    with CompletionCache(directory) as cache, cache.bulk():
        for request in requests_for(n, "mem"):
            cache.put_completion(cache_key("bench", "fake", request), "bench", "fake", request, completion)


def peak_rss_mb_serving(directory: Path, n: int) -> dict:
    """Peak RSS of a fresh process that opens the cache and reads every completion once."""
    code = f"""
import sys
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.cache import cache_key
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


# --- the store at scale -------------------------------------------------------------------------

PROMPT = (
    "Q: "
    + "A coin is heads up. Someone flips the coin. " * 7
    + "Is the coin still heads up?\nA: Let's think step by step."
)
RATIONALE = " The coin starts heads up. " + "Someone flips it, so it is now tails up. " * 9


def store_request(i: int) -> CompletionRequest:
    return CompletionRequest(f"{PROMPT} #{i}", i % 8, 0.7, 128)


def fill_store(directory: Path, n: int) -> float:
    """``n`` completions into a new store, in one transaction (as a collected batch is stored)."""
    start = time.perf_counter()
    with CompletionCache(directory) as cache, cache.bulk():
        for i in range(n):
            r = store_request(i)
            cache.put_completion(
                cache_key("bench", "fake", r), "bench", "fake", r, Completion(RATIONALE, "stop", 90, 100)
            )
    return time.perf_counter() - start


def fill_legacy(path: Path, n: int) -> None:
    """The same completions in the JSONL layout of earlier versions (key first, sorted fields)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r = store_request(i)
            payload = {
                "endpoint": "bench",
                "model": "fake",
                "prompt": r.prompt,
                "temperature": r.temperature,
                "max_tokens": r.max_tokens,
                "sample_index": r.sample_index,
                "text": RATIONALE,
                "finish_reason": "stop",
                "prompt_tokens": 90,
                "completion_tokens": 100,
            }
            body = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            f.write('{"key":"' + cache_key("bench", "fake", r) + '",' + body[1:] + "\n")


# Run in a fresh process: opens a store, looks up `lookups` random keys in batches of 500 (as resolve
# does) and 5,000 one at a time, and reports the times and memory. `kind` is "sqlite" or "legacy".
PROBE = """
import json, random, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from teacher import rss_mb, store_request, LegacyJsonlStore
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.cache import cache_key
kind, directory, n, lookups = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
before = rss_mb()["VmRSS"]
start = time.perf_counter()
store = CompletionCache(directory) if kind == "sqlite" else LegacyJsonlStore(Path(directory) / "completions.jsonl")
opened = time.perf_counter() - start
start = time.perf_counter()
count = len(store)
counted = time.perf_counter() - start
assert count == n, (count, n)
rng = random.Random(0)
keys = [cache_key("bench", "fake", store_request(rng.randrange(n))) for _ in range(lookups)]
start = time.perf_counter()
for i in range(0, len(keys), 500):
    found = store.get_many(keys[i : i + 500])
    assert len(found) == len(set(keys[i : i + 500]))
batched = time.perf_counter() - start
start = time.perf_counter()
for key in keys[:5000]:
    assert store.get_completion(key) is not None
single = time.perf_counter() - start
now = rss_mb()
print(json.dumps({"open_s": opened, "count_s": counted, "batched_s": batched, "single_s": single,
                  "lookups": lookups, "rss_before_mb": before, "peak_rss_mb": now["VmHWM"]}))
"""


class LegacyJsonlStore:
    """The baseline: the store of earlier versions, as it was (scan at open, offsets in memory)."""

    def __init__(self, path: Path):
        self.path = path
        self._offsets: dict[str, int] = {}
        with path.open("rb") as f:
            offset = 0
            for line in f:
                if line.endswith(b"}\n") and line.startswith(b'{"key":"'):
                    self._offsets.setdefault(line[8:72].decode("ascii", "replace"), offset)
                offset += len(line)
        self._f = path.open("rb")

    def __len__(self) -> int:
        return len(self._offsets)

    def get_completion(self, key: str) -> Completion | None:
        offset = self._offsets.get(key)
        if offset is None:
            return None
        self._f.seek(offset)
        record = json.loads(self._f.readline())
        return Completion(record["text"], record["finish_reason"], record["prompt_tokens"], record["completion_tokens"])

    def get_many(self, keys) -> dict[str, Completion]:
        return {k: c for k in keys if (c := self.get_completion(k)) is not None}


def probe(kind: str, directory: Path, n: int, lookups: int) -> dict:
    cmd = [sys.executable, "-c", PROBE, str(REPO / "benchmarks"), kind, str(directory), str(n), str(lookups)]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {
        "open_seconds": round(out["open_s"], 4),
        "count_seconds": round(out["count_s"], 4),
        "lookups_per_second_batched": round(out["lookups"] / out["batched_s"], 1),
        "lookups_per_second_single": round(5000 / out["single_s"], 1),
        "peak_rss_mb": round(out["peak_rss_mb"], 1),
        "rss_before_open_mb": round(out["rss_before_mb"], 1),
    }


APPENDER = """
import sys, time
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.base import CompletionRequest
from ftcot.teacher.base import Completion
from ftcot.teacher.cache import cache_key
directory, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = CompletionCache(directory)
start = time.perf_counter()
for i in range(n):
    r = CompletionRequest(f"appended by {worker}: {i}", 0, 0.0, 8)
    cache.put_completion(cache_key("bench", "fake", r), "bench", "fake", r, Completion("x" * 400, "stop", 1, 1))
print(time.perf_counter() - start)
"""


def concurrent_appends(directory: Path, per_process: int = 5000, processes: int = 2) -> dict:
    """Appends one at a time (a transaction each, as live answers are stored) from several
    processes at once, then checks that every one reads back whole."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(directory), str(w), str(per_process)], stdout=subprocess.PIPE
        )
        for w in range(processes)
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - start
    assert all(p.returncode == 0 for p in procs)
    cache = CompletionCache(directory)
    keys = [
        cache_key("bench", "fake", CompletionRequest(f"appended by {w}: {i}", 0, 0.0, 8))
        for w in range(processes)
        for i in range(per_process)
    ]
    whole = len(cache.get_many(keys))
    assert whole == len(keys) and not cache.damaged, (whole, len(keys))
    return {
        "processes": processes,
        "appends": len(keys),
        "appends_per_second": round(len(keys) / wall, 1),
        "per_process_seconds": [round(float(o), 2) for o in outs],
        "all_read_back_whole": True,
    }


def measure_store(n: int, tmp: Path) -> dict:
    store_dir, legacy_dir = tmp / f"store{n}", tmp / f"legacy{n}"
    legacy_dir.mkdir()
    fill_seconds = fill_store(store_dir, n)
    fill_legacy(legacy_dir / "completions.jsonl", n)
    lookups = min(n, 200_000)
    ours, baseline = probe("sqlite", store_dir, n, lookups), probe("legacy", legacy_dir, n, lookups)
    result = {
        "completions": n,
        "database_mb": round((store_dir / "completions.sqlite3").stat().st_size / 1e6, 1),
        "bulk_insert_per_second": round(n / fill_seconds, 1),
        "sqlite": ours,
        "legacy_jsonl_baseline": baseline,
        "open_speedup": round(baseline["open_seconds"] / ours["open_seconds"], 1),
        "appends_from_two_processes": concurrent_appends(store_dir),
    }
    if n <= 100_000:  # moving an old cache in: once per machine
        start = time.perf_counter()
        assert len(CompletionCache(legacy_dir)) == n
        result["migration_seconds"] = round(time.perf_counter() - start, 2)
    shutil.rmtree(store_dir)
    shutil.rmtree(legacy_dir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--store-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
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
        results["store"] = {str(n): measure_store(n, Path(tmp)) for n in args.store_sizes}
    seq = results["throughput"]["1"]["per_second"]
    results["speedup"] = round(results["throughput"]["32"]["per_second"] / seq, 2)
    results["speedup_definition"] = "throughput at concurrency 32 / sequential throughput (concurrency 1)"
    largest = results["store"][str(max(args.store_sizes))]["sqlite"]
    results["targets"] = {
        "ratio_to_ideal_at_32": {"target": 0.8, "measured": results["throughput"]["32"]["ratio_to_ideal"]},
        "cached_per_second": {"target": 5000, "measured": results["cached"]["per_second"]},
        "peak_rss_mb_100k": {"target": 300, "measured": large["peak_rss_mb"]},
        f"store_open_seconds_{max(args.store_sizes)}": {"target_below": 1.0, "measured": largest["open_seconds"]},
        f"store_peak_rss_mb_{max(args.store_sizes)}": {"target_below": 300, "measured": largest["peak_rss_mb"]},
        f"store_lookups_per_second_{max(args.store_sizes)}": {
            "target": 20000,
            "measured": min(largest["lookups_per_second_batched"], largest["lookups_per_second_single"]),
        },
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
