"""Test helpers that ship with the library: a fault-injecting OpenAI-compatible server."""
