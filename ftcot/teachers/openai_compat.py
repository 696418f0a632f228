"""A teacher behind any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's server, Ollama,
``transformers serve``...), through the official ``openai`` client.

Requests run concurrently under a semaphore. The client itself retries 429 (honouring
``Retry-After``), 5xx, timeouts and dropped connections with exponential backoff and jitter, up
to ``max_retries``; on top of that, a response the client cannot read (malformed JSON) is asked
again within the same budget. Each completion is handed to ``on_result`` the moment it arrives,
so the cache holds it even if the run dies a second later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import httpx2
import openai

from ftcot.teachers.base import Completion, CompletionRequest, RequestFailure, TeacherError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _seed_for(request: CompletionRequest) -> int | None:
    """A per-sample seed, so servers that ignore ``n`` or sample deterministically still give
    distinct samples for distinct sample indices; none for greedy requests."""
    if request.temperature == 0:
        return None
    digest = hashlib.sha256(f"{request.sample_index}:{request.prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class OpenAITeacher:
    """Zero-shot-CoT completions from an OpenAI-compatible server."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        api: Literal["chat", "completions"] = "chat",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        batch: bool = False,
        batch_poll_seconds: float = 30.0,
        batch_state_dir: str | Path | None = None,
    ):
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.api = api
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.api_key_env = api_key_env
        self.batch = batch
        self.batch_poll_seconds = batch_poll_seconds
        self.batch_state_dir = Path(batch_state_dir) if batch_state_dir else None
        if api_key_env is None:
            self._api_key = "not-needed"  # local servers that want no key
        else:
            key = os.environ.get(api_key_env)
            if not key:
                raise TeacherError(
                    f"the environment variable {api_key_env} (teacher.api_key_env) is not set: "
                    f"export the API key for {self.base_url} there, or set teacher.api_key_env: null "
                    "for a server that needs none"
                )
            self._api_key = key

    @property
    def endpoint(self) -> str:
        return f"openai-compatible:{self.api}:{self.base_url}"

    def _client(self) -> openai.AsyncOpenAI:
        # The aiohttp transport (openai[aiohttp]) keeps per-request CPU low at high concurrency,
        # where httpx's connection pool costs about a millisecond per request.
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=openai.DefaultAioHttpClient(timeout=self.timeout),
        )

    def preflight(self) -> None:
        """Fails clearly, before any paid request, when the endpoint cannot be reached."""

        async def probe() -> None:
            client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, timeout=10.0, max_retries=1)
            try:
                await client.models.list()
            finally:
                await client.close()

        try:
            asyncio.run(probe())
        except openai.AuthenticationError as err:
            raise TeacherError(
                f"{self.base_url} refused the API key from {self.api_key_env} ({err.status_code})"
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise TeacherError(
                f"the teacher endpoint {self.base_url} (teacher.base_url) is unreachable: {err}"
            ) from None
        except openai.APIStatusError:
            pass  # reachable; some servers do not implement /models

    def _body(self, request: CompletionRequest) -> dict:
        """The JSON body of one request (the same for live and batch requests)."""
        body: dict = {"model": self.model, "temperature": request.temperature, "max_tokens": request.max_tokens, "n": 1}
        seed = _seed_for(request)
        if seed is not None:
            body["seed"] = seed
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body

    async def _request(self, client: openai.AsyncOpenAI, request: CompletionRequest) -> Completion:
        # client.post with a ready JSON body keeps the client's retries, backoff and errors but
        # skips its per-call parameter transformation and response models, which cost several
        # milliseconds of CPU per request and capped throughput at high concurrency.
        path = "/chat/completions" if self.api == "chat" else "/completions"
        response = await client.post(path, body=self._body(request), cast_to=httpx2.Response)
        return self._parse_completion(response.json())

    def _parse_completion(self, payload: dict) -> Completion:
        """A completion from a response body; a body without choices is unreadable (ValueError)."""
        if not isinstance(payload, dict) or not payload.get("choices"):
            raise ValueError(f"no choices in response: {str(payload)[:200]}")
        choice = payload["choices"][0]
        if self.api == "chat":
            message = choice.get("message") or {}
            # Reasoning models return their chain of thought separately: that is the rationale.
            text = message.get("reasoning_content") or message.get("content") or ""
        else:
            text = choice.get("text") or ""
        usage = payload.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def _run(
        self, requests: Sequence[CompletionRequest], on_result: Callable[[int, Completion], None]
    ) -> list[RequestFailure]:
        semaphore = asyncio.Semaphore(self.concurrency)
        failures: list[RequestFailure] = []
        client = self._client()

        async def one(i: int) -> None:
            async with semaphore:
                for attempt in range(self.max_retries + 1):
                    try:
                        completion = await self._request(client, requests[i])
                    except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
                        # The client does not retry a response it cannot read: we do, in budget.
                        if attempt == self.max_retries:
                            failures.append(RequestFailure(i, f"unreadable response: {err}"))
                            return
                        await asyncio.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                        continue
                    except openai.APIStatusError as err:
                        failures.append(RequestFailure(i, f"HTTP {err.status_code}: {err.message}"))
                        return
                    except (openai.APIConnectionError, openai.APITimeoutError) as err:
                        failures.append(RequestFailure(i, f"{type(err).__name__}: {err}"))
                        return
                    on_result(i, completion)
                    return

        try:
            await asyncio.gather(*(one(i) for i in range(len(requests))))
        finally:
            await client.close()
        return failures

    def complete(
        self, requests: Sequence[CompletionRequest], on_result: Callable[[int, Completion], None]
    ) -> list[RequestFailure]:
        if not requests:
            return []
        if self.batch:
            return asyncio.run(self._run_batch(requests, on_result))
        return asyncio.run(self._run(requests, on_result))

    # Batch API: one JSONL of requests, submitted, polled, collected into the same cache.

    def _batch_line(self, i: int, request: CompletionRequest) -> dict:
        return {"custom_id": str(i), "method": "POST", "url": self._batch_endpoint(), "body": self._body(request)}

    def _batch_endpoint(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    async def _run_batch(
        self, requests: Sequence[CompletionRequest], on_result: Callable[[int, Completion], None]
    ) -> list[RequestFailure]:
        lines = [json.dumps(self._batch_line(i, r), sort_keys=True) for i, r in enumerate(requests)]
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        # A submitted batch is remembered, so a run killed while polling resumes it instead of
        # paying for the same requests twice.
        state = None
        if self.batch_state_dir is not None:
            self.batch_state_dir.mkdir(parents=True, exist_ok=True)
            state = self.batch_state_dir / f"{hashlib.sha256(self.endpoint.encode() + payload).hexdigest()}.json"
        client = self._client()
        try:
            batch_id = json.loads(state.read_text())["batch_id"] if state is not None and state.exists() else None
            if batch_id is None:
                uploaded = await client.files.create(file=("requests.jsonl", payload), purpose="batch")
                batch = await client.batches.create(
                    input_file_id=uploaded.id, endpoint=self._batch_endpoint(), completion_window="24h"
                )
                batch_id = batch.id
                if state is not None:
                    state.write_text(json.dumps({"batch_id": batch_id}))
            while True:
                batch = await client.batches.retrieve(batch_id)
                if batch.status in ("completed", "failed", "expired", "cancelled"):
                    break
                await asyncio.sleep(self.batch_poll_seconds)
            done: set[int] = set()
            failures: list[RequestFailure] = []
            if batch.output_file_id:
                content = await client.files.content(batch.output_file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        self._collect_batch_line(json.loads(line), done, failures, on_result)
            if batch.error_file_id:
                content = await client.files.content(batch.error_file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        self._collect_batch_line(json.loads(line), done, failures, on_result)
            reported = done | {f.index for f in failures}
            failures += [
                RequestFailure(i, f"batch {batch_id} ended {batch.status} without this request")
                for i in range(len(requests))
                if i not in reported
            ]
            if state is not None:
                state.unlink(missing_ok=True)
            return failures
        finally:
            await client.close()

    def _collect_batch_line(
        self, line: dict, done: set[int], failures: list[RequestFailure], on_result: Callable[[int, Completion], None]
    ) -> None:
        i = int(line["custom_id"])
        if i in done:
            return  # a line seen twice is stored once
        response = line.get("response") or {}
        body = response.get("body") or {}
        if line.get("error") or response.get("status_code") != 200 or not body.get("choices"):
            failures.append(RequestFailure(i, f"batch error: {line.get('error') or response.get('status_code')}"))
            return
        on_result(i, self._parse_completion(body))
        done.add(i)
