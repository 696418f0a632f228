"""teacher.max_cost_usd against the counting server: the bill known before it is paid, a run
stopped before any request when the estimate is over budget, and during the run when the spent
cost reaches it, with every answer received kept."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.teacher.budget import Budget, BudgetError, estimate_teaching, token_counter
from ftcot.teacher.cache import CompletionCache
from ftcot.teacher.openai_compat import OpenAITeacher
from ftcot.teacher.teaching import BUDGET_CHUNK, TeachRunStats, estimate_cost, summarize_usage, teach
from ftcot.testing.fake_openai import FakeOpenAI, default_answer

REPO = Path(__file__).resolve().parents[1]
PRICE = {"prompt": 10.0, "completion": 30.0}  # USD per million tokens


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-not-a-secret")


def records(n=20):
    return generate_records(get_task("coin_flip"), n, 0, 0.7)


def teacher_for(server) -> OpenAITeacher:
    return OpenAITeacher(model="fake", base_url=server.base_url, api_key_env="FAKE_KEY", concurrency=4, timeout=2.0)


def test_the_estimate_bounds_what_the_run_costs_and_counts_only_what_the_cache_cannot_answer(tmp_path):
    train = [r for r in records() if r["split"] == "train"]
    with FakeOpenAI() as server:
        teacher = teacher_for(server)
        cache = CompletionCache(tmp_path / "cache")
        before = estimate_teaching([(train, 2)], teacher, cache, 0.7, 128, PRICE)
        assert (before.requests, before.cached) == (4 * len(train), 0)
        assert sum(server.successes.values()) == 0  # estimating sends nothing
        rationales, _ = teach(train, teacher, cache, 2, 0.7, 128)
        spent = summarize_usage(rationales, PRICE)["estimated_cost_usd"]
        assert 0 < spent <= before.cost_usd
        after = estimate_teaching([(train, 2)], teacher, cache, 0.7, 128, PRICE)
        assert (after.requests, after.cached, after.cost_usd) == (0, 4 * len(train), 0.0)
        more = estimate_teaching([(train, 3)], teacher, cache, 0.7, 128, PRICE)  # diversity 2 -> 3
        assert more.requests == 2 * len(train)
    count, how = token_counter("no-such-model")
    assert count("x" * 9) == 3 and how == "about 4 characters per token"


def test_a_run_stops_when_what_it_spent_reaches_the_budget_and_keeps_what_it_received(tmp_path):
    """A server that reports more tokens than asked for (the estimate is a bound on what is asked):
    the budget is checked between chunks of requests, so the run overshoots by one chunk at most."""

    def verbose(prompt: str, body: dict) -> str:
        return default_answer(prompt, body) + " word" * 2000

    train = [r for r in records(60) if r["split"] == "train"]
    with FakeOpenAI(answer=verbose) as server:
        teacher = teacher_for(server)
        cache = CompletionCache(tmp_path / "cache")
        one = estimate_cost(0, 2000, PRICE)
        budget = Budget(limit=one * 20, price=PRICE)
        with pytest.raises(BudgetError, match=r"teacher.max_cost_usd \(.* USD\) reached: this run spent") as err:
            teach(train, teacher, cache, 1, 0.7, 128, TeachRunStats(), budget)
        sent = sum(server.successes.values())
        assert 20 <= sent <= 20 + BUDGET_CHUNK and sent < len(train)
        assert budget.spent >= budget.limit
        assert len(cache) == sent  # every answer paid for is kept
        assert f"the {sent} answers it received are cached" in str(err.value)
        rationales, stats = teach(train, teacher, cache, 1, 0.7, 128)  # no budget: goes on
        assert stats.cache_hits == sent and len(rationales) == len(train)
        assert sum(server.successes.values()) == 2 * len(train)  # nothing asked twice


def stage_project(root: Path, base_url: str, max_cost_usd) -> list[str]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["num_questions"] = 30
    params["teacher"].update(
        {
            "backend": "openai",
            "model": "fake",
            "base_url": base_url,
            "api_key_env": "FAKE_KEY",
            "prices": {"fake": PRICE},
            "max_cost_usd": max_cost_usd,
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(30)))
    return [sys.executable, str(REPO / "stages/teach.py"), "--task", "coin_flip", "--records", "records.jsonl"]


def test_the_stage_prints_the_estimate_and_refuses_a_run_over_budget_before_any_request(tmp_path):
    env = {**os.environ, "FTCOT_CACHE_DIR": str(tmp_path / "cache"), "FAKE_KEY": "sk-test"}
    with FakeOpenAI() as server:
        cmd = stage_project(tmp_path, server.base_url, 0.0001)
        estimate = subprocess.run([*cmd, "--estimate"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert estimate.returncode == 0, estimate.stderr
        # 21 train + 9 test questions, two steps each, nothing cached
        assert "coin_flip: 60 requests to send (0 answered by the cache)" in estimate.stdout
        assert "USD" in estimate.stdout and sum(server.attempts.values()) == 0
        outs = ["--out", "t.jsonl", "--test-out", "t.test.jsonl", "--metrics", "m.json"]
        refused = subprocess.run([*cmd, *outs], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr  # a clean error
        assert "over teacher.max_cost_usd (0.0001 USD)" in refused.stderr and "Nothing was sent" in refused.stderr
        assert sum(server.attempts.values()) == 0 and not (tmp_path / "t.jsonl").exists()

        stage_project(tmp_path, server.base_url, 1.0)  # a budget the run fits in
        done = subprocess.run([*cmd, *outs], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert sum(server.successes.values()) == 60
        again = subprocess.run([*cmd, "--estimate"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert "0 requests to send (60 answered by the cache)" in again.stdout
