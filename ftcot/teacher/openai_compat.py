"""A teacher behind any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's server, Ollama,
``transformers serve``...), through the official ``openai`` client.

Requests run concurrently under a semaphore. The client itself retries 429 (honouring
``Retry-After``), 5xx, timeouts and dropped connections with exponential backoff and jitter, up
to ``max_retries``; on top of that, a response the client cannot read (malformed JSON, or valid
JSON of another shape) is asked again within the same budget and never stored. Each completion
is handed to ``on_result`` the moment it arrives, so the cache holds it even if the run dies a
second later. A systematic refusal (401/403/404 or an exhausted quota, several times in a row)
stops the run at once with one message instead of sending every remaining request. The API key
is registered for redaction: it appears in no message, even where the server echoes it.

With ``batch=True`` each step goes through the Batch API in batches of at most
``batch_max_requests`` requests and ``batch_max_bytes`` bytes, at most ``batch_concurrency`` of
them in flight; every submitted batch is recorded in the cache's ledger before it is polled, so a
killed run resumes each one instead of paying for it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from typing import Literal

import httpx2
import openai

from ftcot.redaction import has_credentials, redact, register_secret, url_without_credentials
from ftcot.teacher.backends import DEFAULT_OPENAI_URL, OPENAI
from ftcot.teacher.base import Completion, CompletionRequest, RequestFailure, TeacherError, UnreadableResponse
from ftcot.teacher.cache import BatchLedger, cache_key

# The Batch API's limits per input file (OpenAI: 50,000 requests, 200 MB).
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200_000_000
# Refusals that no retry changes: after this many in a row, the run stops instead of sending the rest.
FAIL_FAST_AFTER = 5
# The ledger's name for an uploaded input file whose batch may not have been created yet.
UPLOAD_PREFIX = "upload:"
SYSTEMATIC_STATUSES = (401, 403, 404)


class SystematicFailure(TeacherError):
    """The endpoint refuses every request (a bad key, a wrong model or path, no quota)."""


def _content_text(content: object) -> str:
    """A chat message's content as text: a string, or content parts whose text parts are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts, kinds = [], []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise UnreadableResponse(f"a content part is a {type(part).__name__}, not a typed object")
            kinds.append(part["type"])
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise UnreadableResponse("a text content part has no string 'text'")
                texts.append(part["text"])
        if content and not texts:
            raise UnreadableResponse(f"the content parts hold no text (types {sorted(set(kinds))})")
        return "".join(texts)
    raise UnreadableResponse(f"the message content is a {type(content).__name__}, not text")


def parse_completion(payload: object, api: str) -> Completion:
    """A completion from a response body, or :class:`UnreadableResponse` for any other shape."""
    if not isinstance(payload, dict):
        raise UnreadableResponse(f"the response is a {type(payload).__name__}, not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UnreadableResponse(f"no choices in response: {str(payload)[:200]}")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise UnreadableResponse(f"choices[0] is a {type(choice).__name__}, not an object")
    if api == "chat":
        message = choice.get("message")
        if message is None:
            message = {}
        if not isinstance(message, dict):
            raise UnreadableResponse(f"the message is a {type(message).__name__}, not an object")
        reasoning = message.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise UnreadableResponse(f"reasoning_content is a {type(reasoning).__name__}, not text")
        # Reasoning models return their chain of thought separately: that is the rationale.
        text = reasoning or _content_text(message.get("content"))
    else:
        text = choice.get("text")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise UnreadableResponse(f"the completion text is a {type(text).__name__}, not text")
    finish = choice.get("finish_reason")
    if finish is None:
        finish = "unknown"
    usage = payload.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise UnreadableResponse(f"usage is a {type(usage).__name__}, not an object")
    counts = {}
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        counts[name] = 0 if value is None else value
    return Completion(text=text, finish_reason=finish, **counts)  # checks the types


def split_batches(
    lines: Sequence[tuple[str, bytes]], max_requests: int, max_bytes: int
) -> list[list[tuple[str, bytes]]]:
    """Consecutive groups of (key, JSONL line) under both limits (a line counts its newline)."""
    batches: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for key, line in lines:
        n = len(line) + 1
        if n > max_bytes:
            raise TeacherError(
                f"one batch request is {n} bytes, over teacher.batch_max_bytes ({max_bytes}): raise the limit "
                "or send it without the Batch API"
            )
        if current and (len(current) == max_requests or size + n > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append((key, line))
        size += n
    if current:
        batches.append(current)
    return batches


def _seed_for(request: CompletionRequest) -> int | None:
    """A per-sample seed, so servers that ignore ``n`` or sample deterministically still give
    distinct samples for distinct sample indices; none for greedy requests."""
    if request.temperature == 0:
        return None
    digest = hashlib.sha256(f"{request.sample_index}:{request.prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


class OpenAITeacher:
    """Zero-shot-CoT completions from an OpenAI-compatible server."""

    backend = OPENAI

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
        batch_max_requests: int = BATCH_MAX_REQUESTS,
        batch_max_bytes: int = BATCH_MAX_BYTES,
        batch_concurrency: int = 4,
        batch_ledger: BatchLedger | None = None,
        fail_fast_after: int = FAIL_FAST_AFTER,
    ):
        base_url = (base_url or DEFAULT_OPENAI_URL).rstrip("/")
        if has_credentials(base_url):
            # The client would send them as a header it cannot parse, and log the URL with them.
            raise TeacherError(
                f"teacher.base_url must not hold credentials ({url_without_credentials(base_url)}): put the key in "
                f"the environment variable named by teacher.api_key_env (now {api_key_env}) instead"
            )
        self.model = model
        self.base_url = base_url
        self.api = api
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.api_key_env = api_key_env
        self.batch = batch
        self.batch_poll_seconds = batch_poll_seconds
        self.batch_max_requests = batch_max_requests
        self.batch_max_bytes = batch_max_bytes
        self.batch_concurrency = batch_concurrency
        self.batch_ledger = batch_ledger
        self.fail_fast_after = fail_fast_after
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
            register_secret(key)
            self._api_key = key

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model!r}, base_url={self.base_url!r}, api={self.api!r})"

    @property
    def endpoint(self) -> str:
        return f"openai-compatible:{self.api}:{self.base_url}"

    @property
    def _key_hint(self) -> str:
        if self.api_key_env is None:
            return "teacher.api_key_env is null, so no key was sent: set it to the variable that holds one"
        return f"check the key in the environment variable {self.api_key_env} (teacher.api_key_env)"

    def _client(self, max_retries: int | None = None) -> openai.AsyncOpenAI:
        # The aiohttp transport (openai[aiohttp]) keeps per-request CPU low at high concurrency,
        # where httpx's connection pool costs about a millisecond per request.
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries if max_retries is None else max_retries,
            http_client=openai.DefaultAioHttpClient(timeout=self.timeout),
        )

    def preflight(self) -> None:
        """Fails clearly, before any paid request, when the endpoint cannot be reached or refuses
        the key. Same transport and timeout as the requests themselves."""

        async def probe() -> None:
            client = self._client(max_retries=min(1, self.max_retries))
            try:
                await client.models.list()
            finally:
                await client.close()

        try:
            asyncio.run(probe())
        except openai.AuthenticationError as err:
            raise TeacherError(
                redact(f"{self.base_url} refused the API key ({err.status_code}: {err.message}); {self._key_hint}")
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise TeacherError(
                redact(f"the teacher endpoint {self.base_url} (teacher.base_url) is unreachable: {err}")
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

    @property
    def _path(self) -> str:
        return "/chat/completions" if self.api == "chat" else "/completions"

    async def _request(self, client: openai.AsyncOpenAI, request: CompletionRequest) -> Completion:
        # client.post with a ready JSON body keeps the client's retries, backoff and errors but
        # skips its per-call parameter transformation and response models, which cost several
        # milliseconds of CPU per request and capped throughput at high concurrency.
        response = await client.post(self._path, body=self._body(request), cast_to=httpx2.Response)
        return parse_completion(response.json(), self.api)

    def _systematic_message(self, status: int, message: str, refused: int, unsent: int, received: int) -> str:
        if status in (401, 403):
            hint = self._key_hint
        elif status == 404:
            hint = (
                f"check teacher.model ({self.model!r}) and teacher.api ({self.api!r}: {self._path}) against what "
                f"{self.base_url} serves"
            )
        else:
            hint = "the account has no quota left: add credit or use another key"
        return redact(
            f"the teacher endpoint {self.base_url}{self._path} refused {refused} requests in a row "
            f"(HTTP {status}: {message}); {hint}. Stopped without sending the other {unsent}; "
            f"the {received} answers received are cached."
        )

    @staticmethod
    def _is_systematic(err: openai.APIStatusError) -> bool:
        if err.status_code in SYSTEMATIC_STATUSES:
            return True
        code = getattr(err, "code", None) or ((err.body or {}).get("code") if isinstance(err.body, dict) else None)
        return err.status_code == 429 and code == "insufficient_quota"

    async def _run(
        self, requests: Sequence[CompletionRequest], on_result: Callable[[int, Completion], None]
    ) -> list[RequestFailure]:
        semaphore = asyncio.Semaphore(self.concurrency)
        failures: list[RequestFailure] = []
        client = self._client()
        # Refusals in a row (any success resets it); once there are fail_fast_after, nothing more is sent.
        state = {"in_a_row": 0, "unsent": 0, "received": 0, "last": None}

        async def one(i: int) -> None:
            async with semaphore:
                for attempt in range(self.max_retries + 1):
                    if state["in_a_row"] >= self.fail_fast_after:
                        state["unsent"] += 1
                        return
                    try:
                        completion = await self._request(client, requests[i])
                    except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
                        # The client does not retry a response it cannot read: we do, in budget.
                        if attempt == self.max_retries:
                            failures.append(RequestFailure(i, redact(f"unreadable response: {err}")))
                            return
                        await asyncio.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
                        continue
                    except openai.APIStatusError as err:
                        if self._is_systematic(err):
                            state["in_a_row"] += 1
                            state["last"] = (err.status_code, err.message)
                        failures.append(RequestFailure(i, redact(f"HTTP {err.status_code}: {err.message}")))
                        return
                    except (openai.APIConnectionError, openai.APITimeoutError) as err:
                        failures.append(RequestFailure(i, redact(f"{type(err).__name__}: {err}")))
                        return
                    state["in_a_row"] = 0
                    state["received"] += 1
                    on_result(i, completion)
                    return

        try:
            await asyncio.gather(*(one(i) for i in range(len(requests))))
        finally:
            await client.close()
        if state["in_a_row"] >= self.fail_fast_after:
            status, message = state["last"]
            raise SystematicFailure(
                self._systematic_message(status, message, state["in_a_row"], state["unsent"], state["received"])
            )
        return failures

    def complete(
        self, requests: Sequence[CompletionRequest], on_result: Callable[[int, Completion], None]
    ) -> list[RequestFailure]:
        if not requests:
            return []
        if self.batch:
            return asyncio.run(self._run_batch(requests, on_result))
        return asyncio.run(self._run(requests, on_result))

    # Batch API: the requests in batches under the API's limits, submitted, polled, collected.

    def _batch_endpoint(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    def _batch_line(self, key: str, request: CompletionRequest) -> bytes:
        # custom_id is the cache key: a line is matched to its request whatever batch or order it comes in.
        line = {"custom_id": key, "method": "POST", "url": self._batch_endpoint(), "body": self._body(request)}
        return json.dumps(line, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    async def _run_batch(
        self, requests: Sequence[CompletionRequest], on_result: Callable[[int, Completion], None]
    ) -> list[RequestFailure]:
        keys = [cache_key(self.endpoint, self.model, r) for r in requests]
        index = {k: i for i, k in enumerate(keys)}
        ledger = self.batch_ledger
        # Batches a killed run submitted and never collected: resumed, not paid for again.
        resumed = ledger.pending(self.endpoint, self.model, keys) if ledger is not None else []
        in_resumed: set[str] = set()
        resumed_requests: dict[str, dict[str, CompletionRequest]] = {}
        for batch_id in resumed:
            resumed_requests[batch_id] = ledger.requests(batch_id)
            in_resumed |= resumed_requests[batch_id].keys()
        lines = [(k, self._batch_line(k, r)) for k, r in zip(keys, requests, strict=True) if k not in in_resumed]
        chunks = split_batches(lines, self.batch_max_requests, self.batch_max_bytes)
        failures: list[RequestFailure] = []
        reported: set[str] = set()
        semaphore = asyncio.Semaphore(self.batch_concurrency)
        client = self._client()

        async def collect(batch_id: str, asked: dict[str, CompletionRequest]) -> None:
            while True:
                batch = await client.batches.retrieve(batch_id)
                if batch.status in ("completed", "failed", "expired", "cancelled"):
                    break
                await asyncio.sleep(self.batch_poll_seconds)
            lines = []
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    content = await client.files.content(file_id)
                    lines += [line for line in content.text.splitlines() if line.strip()]
            # One transaction for the whole batch: until it commits, the batch is still in the ledger.
            with ledger.cache.bulk() if ledger is not None else nullcontext():
                for line in lines:
                    self._collect_batch_line(line, batch_id, asked, index, reported, failures, on_result)
            failures.extend(
                RequestFailure(index[k], f"batch {batch_id} ended {batch.status} without this request")
                for k in asked
                if k in index and k not in reported
            )
            reported.update(k for k in asked if k in index)
            if ledger is not None:
                ledger.forget(batch_id)

        # A systematic refusal (a bad key, no quota) stops every batch not yet uploaded or created.
        refused: list[openai.APIStatusError] = []

        async def guarded(call: Callable[[], Awaitable]):
            if refused:
                raise refused[0]
            try:
                return await call()
            except openai.APIStatusError as err:
                if self._is_systematic(err):
                    refused.append(err)
                raise

        async def create(file_id: str, asked: dict[str, CompletionRequest]) -> None:
            # The upload is in the ledger before its batch is created: a run killed between the two
            # finds the batch by its input file next time instead of creating (and paying for) another.
            upload = f"{UPLOAD_PREFIX}{file_id}"
            if ledger is not None:
                ledger.record(upload, self.endpoint, self.model, list(asked.items()))
            try:
                batch = await guarded(
                    lambda: client.batches.create(
                        input_file_id=file_id, endpoint=self._batch_endpoint(), completion_window="24h"
                    )
                )
            except openai.BadRequestError:
                if ledger is not None:  # a file the API will never take: no batch, nothing to resume
                    ledger.forget(upload)
                raise
            if ledger is not None:
                ledger.rename(upload, batch.id)
            await collect(batch.id, asked)

        async def submit(chunk: list[tuple[str, bytes]]) -> None:
            async with semaphore:
                payload = b"\n".join(line for _, line in chunk) + b"\n"
                uploaded = await guarded(lambda: client.files.create(file=("requests.jsonl", payload), purpose="batch"))
                await create(uploaded.id, {k: requests[index[k]] for k, _ in chunk})

        async def resume(batch_id: str) -> None:
            async with semaphore:
                asked = resumed_requests[batch_id]
                if not batch_id.startswith(UPLOAD_PREFIX):
                    return await collect(batch_id, asked)
                file_id = batch_id.removeprefix(UPLOAD_PREFIX)
                existing = await self._batch_of_file(client, file_id)
                if existing is None:  # killed before its batch was created: created now, once
                    return await create(file_id, asked)
                if ledger is not None:
                    ledger.rename(batch_id, existing)
                await collect(existing, asked)

        try:
            outcomes = await asyncio.gather(
                *(resume(b) for b in resumed), *(submit(c) for c in chunks), return_exceptions=True
            )
        finally:
            await client.close()
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            err = errors[0]
            what = f"HTTP {err.status_code}: {err.message}" if isinstance(err, openai.APIStatusError) else repr(err)
            if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
                what += f"; {self._key_hint}"
            raise TeacherError(
                redact(
                    f"the Batch API at {self.base_url} failed ({what}); {len(errors)} of "
                    f"{len(resumed) + len(chunks)} batches did not finish. Batches already submitted are "
                    "remembered and collected by the next run; the answers received are cached."
                )
            )
        return failures

    @staticmethod
    async def _batch_of_file(client: openai.AsyncOpenAI, file_id: str) -> str | None:
        """The id of the batch created from the uploaded ``file_id``, or None (newest batches first)."""
        async for batch in client.batches.list(limit=100):
            if batch.input_file_id == file_id:
                return batch.id
        return None

    def _collect_batch_line(
        self,
        raw: str,
        batch_id: str,
        asked: dict[str, CompletionRequest],
        index: dict[str, int],
        reported: set[str],
        failures: list[RequestFailure],
        on_result: Callable[[int, Completion], None],
    ) -> None:
        try:
            line = json.loads(raw)
            key = line["custom_id"]
        except (ValueError, KeyError, TypeError):
            return  # not a line of ours: its request, if any, is reported as missing
        if key in reported or key not in asked:
            return  # a line seen twice is stored once
        response = line.get("response") or {}
        status = response.get("status_code") if isinstance(response, dict) else None
        try:
            if line.get("error") or status != 200:
                raise UnreadableResponse(f"batch error: {line.get('error') or status}")
            completion = parse_completion(response.get("body"), self.api)
        except UnreadableResponse as err:
            if key in index:
                failures.append(RequestFailure(index[key], redact(str(err))))
                reported.add(key)
            return
        if key in index:
            reported.add(key)
            on_result(index[key], completion)
        elif self.batch_ledger is not None:
            # Asked by an earlier run that this one does not need: paid for, so kept.
            self.batch_ledger.cache.put_completion(key, self.endpoint, self.model, asked[key], completion)


def from_params(params, task: str, records, cache) -> OpenAITeacher:
    """The backend's row in ftcot.teacher.backends: the server of ``teacher.base_url``; a Batch API
    run keeps its submitted batches in ``cache``'s ledger."""
    t = params.teacher
    return OpenAITeacher(
        model=t.model,
        base_url=t.base_url,
        api_key_env=t.api_key_env,
        api=t.api,
        concurrency=t.concurrency,
        timeout=t.timeout,
        max_retries=t.max_retries,
        batch=t.batch,
        batch_poll_seconds=t.batch_poll_seconds,
        batch_max_requests=t.batch_max_requests,
        batch_max_bytes=t.batch_max_bytes,
        batch_concurrency=t.batch_concurrency,
        batch_ledger=cache.batches,
    )
