"""Teachers: backends that complete prompts, behind one interface and one completion cache."""

from ftcot.teachers.base import Completion, CompletionRequest, Teacher
from ftcot.teachers.cache import CompletionCache, default_cache_dir

__all__ = ["Completion", "CompletionCache", "CompletionRequest", "Teacher", "default_cache_dir"]
