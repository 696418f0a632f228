from dataclasses import replace

import pytest

from ftcot.answers import extract_answer
from ftcot.data.synthetic import generate_records
from ftcot.data.tasks import get_task
from ftcot.teacher.base import Completion, CompletionRequest, RequestMeta
from ftcot.teacher.cache import CompletionCache, cache_key, encode_record
from ftcot.teacher.oracle import OracleTeacher, UnsupportedQuestion
from ftcot.teacher.prompts import rationale_prompt
from ftcot.teacher.teaching import answer_request, rationale_request, sampling_temperature, teach
from ftcot.testing.teachers import CountingTeacher


def complete_one(teacher, request):
    got = []
    assert teacher.complete([request], lambda i, c: got.append(c)) == []
    return got[0]


def records(task="coin_flip", n=40):
    return [r for r in generate_records(get_task(task), n, 0, 0.7) if r["split"] == "train"]


@pytest.mark.parametrize("task", ["coin_flip", "last_letter_concatenation"])
def test_oracle_without_errors_is_always_right(task):
    teacher = OracleTeacher(error_rate=0.0)
    for r in records(task):
        rationale = complete_one(teacher, rationale_request(r, 0, 0.0, 128)).text
        answer = complete_one(teacher, answer_request(r, 0, rationale))
        assert extract_answer(answer.text, r["answer_type"], "teacher") == r["answer"], rationale


@pytest.mark.parametrize("task", ["coin_flip", "last_letter_concatenation"])
def test_oracle_errors_reach_wrong_answers(task):
    teacher = OracleTeacher(error_rate=1.0)
    for r in records(task):
        rationale = complete_one(teacher, rationale_request(r, 0, 0.0, 128)).text
        answer = complete_one(teacher, answer_request(r, 0, rationale))
        assert extract_answer(answer.text, r["answer_type"], "teacher") != r["answer"], rationale


def test_oracle_samples_differ_by_index():
    teacher = OracleTeacher()
    texts = {complete_one(teacher, rationale_request(records()[0], k, 0.7, 128)).text for k in range(8)}
    assert len(texts) >= 4


def test_oracle_rejects_other_questions():
    with pytest.raises(UnsupportedQuestion, match="only knows"):
        complete_one(OracleTeacher(), rationale_request({"id": "q", "question": "What is 2 + 2?"}, 0, 0.0, 16))
    with pytest.raises(UnsupportedQuestion, match="say their question"):  # a bare prompt: nothing to read
        complete_one(OracleTeacher(), CompletionRequest(rationale_prompt("What is 2 + 2?"), 0, 0.0, 16))


def test_cache_key_depends_on_endpoint_and_sample():
    r = CompletionRequest("Q: x\nA: Let's think step by step.", 0, 0.7, 64)
    base = cache_key("http://a/v1", "m", r)
    assert base != cache_key("http://b/v1", "m", r)
    assert base != cache_key("http://a/v1", "m2", r)
    assert base != cache_key("http://a/v1", "m", CompletionRequest(r.prompt, 1, 0.7, 64))
    assert base == cache_key("http://a/v1", "m", CompletionRequest(r.prompt, 0, 0.7, 64))
    # What a request is for travels beside it, outside the key: the same prompt is the same answer.
    meta = RequestMeta("coin_flip-001", "x", "rationale")
    assert base == cache_key("http://a/v1", "m", CompletionRequest(r.prompt, 0, 0.7, 64, meta))
    assert base == cache_key("http://a/v1", "m", CompletionRequest(r.prompt, 0, 0.7, 64, replace(meta, step="answer")))


def legacy_line(key: str, endpoint: str, model: str, request: CompletionRequest, text: str) -> str:
    """A line of the cache of earlier versions (completions.jsonl): the key first, then sorted fields."""
    blob, _ = encode_record(key, endpoint, model, request, Completion(text, "stop", 3, 2))
    return '{"key":"' + key + '",' + blob.decode()[1:] + "\n"


def test_cache_of_earlier_versions_is_moved_in_and_a_torn_line_asked_again(tmp_path):
    a = CompletionRequest("Q: a?\nA: Let's think step by step.", 0, 0.0, 8)
    b = CompletionRequest("Q: b?\nA: Let's think step by step.", 0, 0.0, 8)
    key_a, key_b = cache_key("e", "m", a), cache_key("e", "m", b)
    legacy = tmp_path / "completions.jsonl"
    # A crash mid-write of the old format left half a line.
    legacy.write_text(legacy_line(key_a, "e", "m", a, "first") + legacy_line(key_b, "e", "m", b, "second")[:40])
    cache = CompletionCache(tmp_path)
    assert cache.get_completion(key_a).text == "first"
    assert cache.get_completion(key_b) is None and len(cache) == 1
    assert not legacy.exists() and (tmp_path / "completions.jsonl.migrated").exists()  # kept, not deleted
    cache.put_completion(key_b, "e", "m", b, Completion("after crash", "stop", 1, 1))
    cache.close()
    again = CompletionCache(tmp_path)
    assert again.get_completion(key_b).text == "after crash" and len(again) == 2


def test_sampling_temperature():
    assert sampling_temperature(1, 0.7) == 0.0
    assert sampling_temperature(4, 0.7) == 0.7


def test_raising_diversity_requests_only_new_samples(tmp_path):
    qs = records(n=20)
    cache = CompletionCache(tmp_path)
    teacher = CountingTeacher(error_rate=0.2)
    out2, stats = teach(qs, teacher, cache, diversity=2, temperature=0.7, max_tokens=128)
    assert len(teacher.sent) == 2 * 2 * len(qs)  # two steps per rationale
    assert stats.requests_sent == len(teacher.sent) and stats.cache_hits == 0

    teacher.sent.clear()
    out4, stats = teach(qs, teacher, cache, diversity=4, temperature=0.7, max_tokens=128)
    assert len(teacher.sent) == 2 * 2 * len(qs)  # samples 2 and 3 only
    assert {r.sample_index for r in teacher.sent} == {2, 3}
    assert stats.cache_hits == 2 * 2 * len(qs)
    assert [r for r in out4 if r["sample_index"] < 2] == out2

    teacher.sent.clear()
    rerun, stats = teach(qs, teacher, cache, diversity=4, temperature=0.7, max_tokens=128)
    assert teacher.sent == [] and rerun == out4


def test_teach_output_schema_and_order(tmp_path):
    qs = records(n=20)
    out, _ = teach(qs, OracleTeacher(), CompletionCache(tmp_path), diversity=2, temperature=0.7, max_tokens=128)
    assert [(r["question_id"], r["sample_index"]) for r in out] == sorted((q["id"], k) for q in qs for k in range(2))
    first = out[0]
    assert first["prompt_version"] == "zero-shot-cot-v1"
    assert first["teacher"] == {"backend": "oracle", "model": "oracle", "endpoint": OracleTeacher().endpoint}
    assert first["usage"]["completion_tokens"] > 0 and len(first["cache_keys"]) == 2
