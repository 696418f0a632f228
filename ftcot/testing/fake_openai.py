"""A fault-injecting OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It implements /v1/models, /v1/chat/completions, /v1/completions and the Batch API's /v1/files,
/v1/batches (create and list), /v1/batches/{id} and /v1/files/{id}/content. Answers are deterministic functions of
the request. ``faults`` decides, per request identity and attempt number, whether to answer 429
(with Retry-After), 500, too slowly, with malformed JSON, or by dropping the connection (FAULTS);
with a refusal that echoes the key it was sent, as real servers do (REFUSALS); or with valid JSON
of an unexpected shape (SHAPES). Every attempt and every successful answer is counted per request
identity, server-side. ``hold_batches`` keeps every batch in progress until it is set;
``refuse_batch_key`` refuses every upload with a 401 that echoes the key.
"""

from __future__ import annotations

import email.parser
import hashlib
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "slow", "malformed", "drop")
REFUSALS = ("401", "403", "404", "quota")
# Valid JSON of other shapes: content parts (readable, joined), and four unreadable ones.
SHAPES = ("content_parts", "content_object", "choices_str", "usage_list", "tokens_str")


def reshape(payload: dict, shape: str) -> dict:
    """``payload`` (a chat completion) in one of the SHAPES."""
    choice = payload["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    if shape == "content_parts":
        half = len(text) // 2
        parts = [{"type": "text", "text": text[:half]}, {"type": "text", "text": text[half:]}]
        if "message" in choice:
            choice["message"]["content"] = parts
        else:
            choice["text"] = parts  # not a shape the completions API has: unreadable there
    elif shape == "content_object":
        if "message" in choice:
            choice["message"]["content"] = {"value": text}
        else:
            choice["text"] = {"value": text}
    elif shape == "choices_str":
        payload["choices"] = ["x"]
    elif shape == "usage_list":
        payload["usage"] = [1, 2]
    elif shape == "tokens_str":
        payload["usage"]["completion_tokens"] = "12"
    return payload


def request_identity(body: dict) -> str:
    prompt = body.get("prompt") or body["messages"][-1]["content"]
    blob = json.dumps([prompt, body.get("seed"), body.get("max_tokens"), body.get("temperature")])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_answer(prompt: str, body: dict) -> str:
    """A rationale for step 1; "Yes." for an answer step (it ends with a trigger)."""
    if prompt.rstrip().endswith(" is"):
        return " Yes."
    return f" Reasoning about {prompt[3:40]!r} (seed {body.get('seed')})."


class FakeOpenAI:
    def __init__(
        self,
        latency: float = 0.0,
        faults: Callable[[str, int], str | None] | None = None,
        slow_seconds: float = 2.0,
        answer: Callable[[str, dict], str] = default_answer,
        batch_polls_before_done: int = 1,
        hold_batches: threading.Event | None = None,
        refuse_batch_key: bool = False,
    ):
        self.latency = latency
        self.faults = faults or (lambda identity, attempt: None)
        self.slow_seconds = slow_seconds
        self.answer = answer
        self.batch_polls_before_done = batch_polls_before_done
        self.hold_batches = hold_batches
        self.refuse_batch_key = refuse_batch_key  # answer every upload with a 401 that echoes the key
        self.upload_attempts = 0
        self.refusals: list[str] = []  # the text of every refusal sent (they echo the key)
        self.attempts: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.uploads = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def completion_body(self, body: dict, chat: bool) -> dict:
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        text = self.answer(prompt, body)
        choice = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {
            "id": f"cmpl-{next(self._ids)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(text.split()),
                "total_tokens": len(prompt.split()) + len(text.split()),
            },
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
                self._send(status, json.dumps(obj).encode(), headers)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    return self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                if self.path.split("?")[0].rstrip("/") == "/v1/batches":  # newest first, one page
                    views = [fake._batch_view(b) for b in reversed(fake.batches.values())]
                    return self._json(200, {"object": "list", "data": views, "has_more": False})
                if self.path.startswith("/v1/batches/"):
                    batch = fake.batches[self.path.rsplit("/", 1)[1]]
                    batch["polls"] += 1
                    held = fake.hold_batches is not None and not fake.hold_batches.is_set()
                    if batch["polls"] > fake.batch_polls_before_done and batch["status"] != "completed" and not held:
                        fake._finish_batch(batch)
                    return self._json(200, fake._batch_view(batch))
                if self.path.startswith("/v1/files/") and self.path.endswith("/content"):
                    file_id = self.path.split("/")[3]
                    return self._send(200, fake.files[file_id])
                self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                raw = self._body()
                if self.path == "/v1/files":
                    fake.upload_attempts += 1
                    if fake.refuse_batch_key:
                        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                        message = f"Incorrect API key provided: {key}."
                        fake.refusals.append(message)
                        return self._json(401, {"error": {"message": message, "code": "invalid_api_key"}})
                    return self._json(200, fake._upload(self.headers["Content-Type"], raw))
                if self.path == "/v1/batches":
                    return self._json(200, fake._create_batch(json.loads(raw)))
                chat = self.path == "/v1/chat/completions"
                if not chat and self.path != "/v1/completions":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(raw)
                identity = request_identity(body)
                with fake._lock:
                    attempt = fake.attempts[identity]
                    fake.attempts[identity] += 1
                fault = fake.faults(identity, attempt)
                if fault == "429":
                    return self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.1"})
                if fault == "500":
                    return self._json(500, {"error": {"message": "boom"}})
                if fault in REFUSALS:
                    key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    status, message, code = {
                        "401": (401, f"Incorrect API key provided: {key}.", "invalid_api_key"),
                        "403": (403, f"The key {key} may not use this model.", None),
                        "404": (404, f"The model {body.get('model')!r} does not exist (key {key}).", None),
                        "quota": (429, f"You exceeded your current quota (key {key}).", "insufficient_quota"),
                    }[fault]
                    with fake._lock:
                        fake.refusals.append(message)
                    return self._json(status, {"error": {"message": message, "type": "error", "code": code}})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if fault == "slow":
                    time.sleep(fake.slow_seconds)
                if fake.latency:
                    time.sleep(fake.latency)
                if fault == "malformed":
                    return self._send(200, b'{"id": "cmpl", "choices": [{"message": ')
                reply = fake.completion_body(body, chat)
                if fault in SHAPES:
                    reply = reshape(reply, fault)
                payload = json.dumps(reply).encode()
                self._send(200, payload)
                with fake._lock:
                    fake.successes[identity] += 1
                return None

        return Handler

    # Batch API stand-in

    def _upload(self, content_type: str, raw: bytes) -> dict:
        message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        data = b""
        for part in message.get_payload():
            if part.get_param("name", header="content-disposition") == "file":
                data = part.get_payload(decode=True)
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        self.uploads += 1
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 0,
            "filename": "requests.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def _create_batch(self, body: dict) -> dict:
        batch_id = f"batch-{next(self._ids)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "input_file_id": body["input_file_id"],
            "endpoint": body["endpoint"],
            "status": "in_progress",
            "polls": 0,
            "output_file_id": None,
        }
        return self._batch_view(self.batches[batch_id])

    def _finish_batch(self, batch: dict) -> None:
        lines = []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            request = json.loads(line)
            chat = request["url"] == "/v1/chat/completions"
            body = self.completion_body(request["body"], chat)
            self.successes[request_identity(request["body"])] += 1
            lines.append(
                json.dumps(
                    {
                        "id": f"r-{next(self._ids)}",
                        "custom_id": request["custom_id"],
                        "response": {"status_code": 200, "body": body},
                        "error": None,
                    }
                )
            )
        out_id = f"file-{next(self._ids)}"
        self.files[out_id] = ("\n".join(lines) + "\n").encode()
        batch["output_file_id"] = out_id
        batch["status"] = "completed"

    @staticmethod
    def _batch_view(batch: dict) -> dict:
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": batch["endpoint"],
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": batch["status"],
            "created_at": 0,
            "output_file_id": batch["output_file_id"],
            "error_file_id": None,
        }
