"""One mirror folder of every public file the tests read offline, laid out like the upstream
repositories, made of links into ``../shared`` (datasets, Kojima et al.'s logs, reasoning-teacher's
split files)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def combined_mirror(root: Path, shared: Path = SHARED) -> Path:
    links = {
        "zero_shot_cot/dataset": shared / "datasets/zero_shot_cot/dataset",
        "zero_shot_cot/log": shared / "teacher_outputs/zero_shot_cot/log",
        "grade-school-math": shared / "datasets/grade-school-math",
        "AQuA": shared / "datasets/AQuA",
        "reasoning-teacher": shared / "reasoning-teacher",
    }
    for name, target in links.items():
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return root
