"""Evaluation: batched generation, scoring with the answer types' rules, and the prompting
baselines of the pretrained student (stages evaluate and prompt)."""
