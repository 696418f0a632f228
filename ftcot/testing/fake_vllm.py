"""A stand-in for vLLM's command, for tests on machines without a GPU or vLLM:

    python -m ftcot.testing.fake_vllm serve <model folder> --host 127.0.0.1 --port 8000 \
        --served-model-name student --dtype float32 --seed 0 \
        [--enable-lora --lora-modules name=<adapter folder> --max-lora-rank 16]

It parses vLLM's arguments (refusing, as vLLM does, LoRA modules without --enable-lora or of a rank
above --max-lora-rank), loads the model with transformers and answers vLLM's OpenAI-compatible
``/v1/models`` and ``/v1/completions`` (prompts as text or token ids, ``n``, ``stop``,
``max_tokens``, ``temperature``, ``seed``; a LoRA module's name for its adapter over the base, loaded
with peft), one prompt at a time through ``model.generate``: an
implementation of its own, not the project's decoding. ``FAKE_VLLM_FAIL=1`` makes it exit at
start-up with a message, as a server that cannot load its model does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", default=None)
    serve.add_argument("--dtype", default="auto")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--enable-lora", action="store_true")
    serve.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH")
    serve.add_argument("--max-lora-rank", type=int, default=16)
    args = parser.parse_args(argv)
    if os.environ.get("FAKE_VLLM_FAIL"):
        print("ValueError: the model could not be loaded (FAKE_VLLM_FAIL)", flush=True)
        sys.exit(1)
    if args.lora_modules and not args.enable_lora:
        print("ValueError: LoRA modules are given but --enable-lora is not", flush=True)
        sys.exit(1)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(args.dtype)
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    name = args.served_model_name or args.model
    models = {name: base}
    cards = [{"id": name, "object": "model", "owned_by": "vllm", "root": args.model, "parent": None}]
    for module in args.lora_modules:
        from peft import PeftConfig, PeftModel

        lora_name, path = module.split("=", 1)
        rank = PeftConfig.from_pretrained(path).r
        if rank > args.max_lora_rank:
            print(f"ValueError: LoRA rank {rank} is greater than max_lora_rank {args.max_lora_rank}", flush=True)
            sys.exit(1)
        fresh = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
        models[lora_name] = PeftModel.from_pretrained(fresh, path).eval()
        cards.append({"id": lora_name, "object": "model", "owned_by": "vllm", "root": path, "parent": name})
    lock = threading.Lock()  # one generation at a time, as one GPU would

    def complete(model, ids: list[int], body: dict) -> list[dict]:
        n, temperature = body.get("n", 1), body.get("temperature", 1.0)
        options = {"max_new_tokens": body["max_tokens"], "pad_token_id": tokenizer.eos_token_id}
        if temperature > 0:
            torch.manual_seed(body.get("seed") or 0)
            options |= {"do_sample": True, "temperature": temperature, "top_k": 0, "num_return_sequences": n}
        else:
            options |= {"do_sample": False}
        with lock, torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), **options
            )
        choices = []
        for row in out[:, len(ids) :].tolist():
            finish = "length"
            if tokenizer.eos_token_id in row:
                row, finish = row[: row.index(tokenizer.eos_token_id)], "stop"
            text = tokenizer.decode(row, skip_special_tokens=True)
            cuts = [text.index(s) for s in body.get("stop") or [] if s in text]
            if cuts:
                text, finish = text[: min(cuts)], "stop"
            choices.append({"text": text, "finish_reason": finish})
        return choices

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": cards})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/completions" or body.get("model") not in models:
                self._json(404, {"error": {"message": f"no model {body.get('model')!r} here"}})
                return
            prompts = body["prompt"]
            if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
                prompts = [prompts]
            choices = []
            for p in prompts:
                ids = tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else p
                choices += complete(models[body["model"]], ids, body)
            for index, choice in enumerate(choices):
                choice |= {"index": index, "logprobs": None}
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            payload = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": name}
            self._json(200, payload | {"choices": choices, "usage": usage})

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake vLLM serving {args.model} as {name} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
