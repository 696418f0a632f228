"""The benchmarks' runs in processes of their own (benchmarks/machine.py): the answer comes back,
and a process that dies without one is an error rather than a wait without end."""

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from machine import in_own_process


def answer_with_my_pid(offset: int, queue) -> None:
    queue.put(os.getpid() + offset)


def die_without_answering(queue) -> None:
    os._exit(3)


def test_the_answer_comes_back_from_another_process():
    assert in_own_process(answer_with_my_pid, 0) not in (0, os.getpid())


def test_a_process_that_dies_without_an_answer_is_an_error():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"die_without_answering: its process exited \(code 3\) without a result"):
        in_own_process(die_without_answering)
    assert time.monotonic() - start < 60
