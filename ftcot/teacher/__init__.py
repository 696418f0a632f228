"""The teacher: zero-shot-CoT prompts, the backends that answer them (oracle, any OpenAI-compatible
server, replayed outputs), the completion cache every answer goes through, teaching and the filter
of rationales by their final answer (stages teach and filter)."""
