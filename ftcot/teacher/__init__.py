"""The teacher: zero-shot-CoT prompts, the backends that answer them (oracle, any OpenAI-compatible
server, replayed outputs), the completion cache every answer goes through, and teaching (stage
teach). The rationales are judged and kept by :mod:`ftcot.filtering` (stage filter)."""
