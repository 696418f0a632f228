"""Typed, validated pipeline parameters (``params.yaml``).

Every stage loads the whole file through :func:`load_params`, and the first stage of the
pipeline (``check``, which depends on the file itself) does nothing else, so a typo anywhere stops
``dvc repro`` / ``dvc exp run`` before any other stage does any work (and before any teacher is
paid), even when nothing else changed. Each section is a pydantic model with ``extra="forbid"``
and ``strict=True``: an unknown key, or a value of the wrong type (``diversity: true``,
``epochs: "3"``), is an error that names the key.

params.yaml is the one source of values for a run: :func:`load_params` refuses a file with a key
missing. The defaults below serve library callers and tests only, and a test holds them equal to
params.yaml (and to the table of docs/parameters.md).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ftcot.data.tasks import DEFAULT_TASK_DIR, TASKS, Task, check_local_paths, load_tasks
from ftcot.errors import FtcotError
from ftcot.evaluation.engines import ENGINE_NAMES, ENGINES, HF
from ftcot.io import DataError, load_yaml, read_text
from ftcot.methods import FINETUNE_METHODS, PROMPTING_METHODS
from ftcot.redaction import has_credentials, url_without_credentials
from ftcot.teacher.backends import BACKEND_NAMES, BACKENDS, DEFAULT_REPLAY_DIR, OPENAI, ORACLE

# The built-in students trained from scratch (ftcot.student.models builds them from student.tiny).
TINY_STUDENTS = ("tiny-llama", "tiny-gpt2", "tiny-t5")

DEFAULT_PARAMS_PATH = Path("params.yaml")


class ConfigError(FtcotError, ValueError):
    """params.yaml is missing, malformed or names an impossible setting."""


class Section(BaseModel):
    # strict: YAML's `true` is not the integer 1, nor "3" the number 3.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HubParams(Section):
    """A Hugging Face ``datasets`` source: ``datasets.load_dataset(path, name)``."""

    path: str = Field(description="Hub id or local folder, e.g. openai/gsm8k.")
    name: str | None = Field(None, description="Configuration name, e.g. main.")


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))


def task_options_model(task: Task) -> type[Section] | None:
    """``data.<task>``: the choices a task file offers, or None for a task that offers none.

    - ``source``, when the file names several sources (the first is the default);
    - ``hub``, when one of them is a Hugging Face dataset (another id or folder for it);
    - ``train_file`` and ``train_size``, when train questions are sampled from a pool.
    """
    fields: dict = {}
    names = list(task.sources)
    if len(names) > 1:
        described = "; ".join(f"'{n}': {task.sources[n].description or task.sources[n].kind}" for n in names)
        fields["source"] = (Literal[tuple(names)], Field(names[0], description=described))
    if task.has_hub:
        fields["hub"] = (HubParams | None, Field(None, description="Hub source; defaults to the task file's Hub id."))
    split = task.spec.split
    if split.train_pools:
        pools = split.train_pools
        fields["train_file"] = (
            Literal[tuple(pools)],
            Field(pools[0], description=f"The role train questions are sampled from: {', '.join(pools)}."),
        )
    if split.index_files:
        names = ("ratio", *split.index_files)
        fields["split"] = (
            Literal[names],
            Field(
                "ratio",
                description=f"'ratio': data.train_fraction; or a split of the task file: {', '.join(names[1:])}.",
            ),
        )
    if split.train_sample is not None:
        fields["train_size"] = (
            int,
            Field(split.train_sample, ge=1, description="Train questions sampled (seeded) from the pool."),
        )
    if not fields:
        return None
    return create_model(f"{_camel(task.key)}Options", __base__=Section, __doc__=f"``data.{task.key}``", **fields)


class DataSection(Section):
    """``data``: which tasks to build and how (stage ``fetch``). The per-task sections
    (``data.<task>``) are made from the task files: see :func:`data_params_model`."""

    tasks: list[str] = Field(min_length=1, description="Task keys to run, e.g. [gsm8k, coin_flip].")
    task_dir: str = Field(DEFAULT_TASK_DIR, description="The project's own task files (<key>.yaml).")
    mirror: str | list[str] | None = Field(
        None,
        description="Local folder laid out like the upstream paths, or a list of them searched in order; else "
        "$FTCOT_DATA_MIRROR (folders separated by ':'), else download.",
    )
    verify_checksums: bool = Field(True, description="Refuse source files whose SHA-256 differs from the pin.")
    max_chars: int = Field(
        100_000, ge=1, description="Longest question, answer or reference rationale accepted (characters)."
    )
    allow_outside_paths: bool = Field(
        False,
        description="Accept task files' local paths outside the project (they must be pinned by sha256).",
    )
    num_questions: int = Field(500, ge=10, description="Questions generated for each synthetic task (paper: 500).")
    train_fraction: float = Field(
        0.7, gt=0.0, lt=1.0, description="Share of questions in train for tasks with no official split."
    )
    max_train: int | None = Field(None, ge=1, description="Cap on train questions per task (seeded subsample).")
    max_test: int | None = Field(None, ge=1, description="Cap on test questions per task (seeded subsample).")
    drop_test_duplicates: bool = Field(
        True,
        description="Drop train questions whose text is also a test question (counted); false: the paper's exact "
        "split, duplicates included.",
    )

    def task_options(self, key: str) -> Section | None:
        """``data.<key>``, or None for a task without options."""
        return getattr(self, key, None)

    known_tasks: ClassVar[tuple[str, ...]] = tuple(TASKS)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        unknown = [t for t in tasks if t not in cls.known_tasks]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {sorted(cls.known_tasks)}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks are listed twice: {tasks}")
        return tasks


_DATA_MODELS: dict[tuple, type[DataSection]] = {}


def data_params_model(tasks: dict[str, Task]) -> type[DataSection]:
    """The ``data`` section for these tasks (built-in and a project's own), made once per set of task files."""
    signature = tuple((key, task.path, task.spec.model_dump_json()) for key, task in tasks.items())
    if signature not in _DATA_MODELS:
        fields = {}
        for key, task in tasks.items():
            options = task_options_model(task)
            if options is not None:
                fields[key] = (options, options())
        model = create_model("DataParams", __base__=DataSection, **fields)
        model.known_tasks = tuple(tasks)
        _DATA_MODELS[signature] = model
    return _DATA_MODELS[signature]


DataParams = data_params_model(TASKS)  # the built-in tasks' section: documentation and library callers


class OracleParams(Section):
    """``teacher.oracle``: the programmatic stand-in teacher for synthetic tasks."""

    error_rate: float = Field(0.2, ge=0.0, le=1.0, description="Seeded share of rationales that reach a wrong answer.")


class PriceParams(Section):
    """US dollars per million tokens, for the cost estimate."""

    prompt: float = Field(ge=0.0)
    completion: float = Field(ge=0.0)


class ReplayParams(Section):
    """``teacher.replay``: recorded teacher outputs instead of requests."""

    dir: str = Field(
        DEFAULT_REPLAY_DIR,
        description="Folder of <task>.jsonl files (format ftcot), or of reasoning-teacher's extracted archive.",
    )
    format: Literal["ftcot", "kojima", "reasoning_teacher"] = Field(
        "ftcot",
        description="'ftcot': <dir>/<task>.jsonl; 'kojima': Kojima et al.'s published zero-shot-CoT log of the "
        "task (downloaded, pinned; data.mirror); 'reasoning_teacher': <dir>/B_<teacher.model>__C_<completion_key>/"
        "D_<task>.json.",
    )
    completion_key: str = Field("zs_cot", description="reasoning_teacher: the C_<completion_key> folder.")


class TeacherParams(Section):
    """``teacher``: who writes the rationales (stage ``teach``)."""

    backend: Literal[BACKEND_NAMES] = Field(
        ORACLE, description="; ".join(f"'{b.name}': {b.description}" for b in BACKENDS.values()) + "."
    )
    model: str = Field(ORACLE, description="Model name sent to the backend.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature when diversity > 1 (paper: 0.7).")
    max_tokens: int = Field(128, ge=1, description="Token limit of the rationale step.")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; null: api.openai.com."
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (never the key itself); null: no key.",
    )
    api: Literal["chat", "completions"] = Field("chat", description="Which endpoint an OpenAI-compatible server uses.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout: float = Field(60.0, gt=0.0, description="Seconds before a request is abandoned (and retried).")
    max_retries: int = Field(5, ge=0, description="Retries per request (429, 5xx, timeouts, dropped connections).")
    batch: bool = Field(False, description="Use the Batch API: submit, poll, collect (openai backend).")
    batch_poll_seconds: float = Field(30.0, gt=0.0, description="Seconds between polls of a submitted batch.")
    batch_max_requests: int = Field(
        50000, ge=1, description="Requests per submitted batch at most (OpenAI's limit: 50,000)."
    )
    batch_max_bytes: int = Field(
        200_000_000, ge=1024, description="Bytes per batch input file at most (OpenAI's limit: 200 MB)."
    )
    batch_concurrency: int = Field(4, ge=1, description="Batches submitted and not yet collected at once.")
    eval_test: bool = Field(True, description="Also answer the test questions (sample 0): the teacher baseline.")
    prices: dict[str, PriceParams] = Field(
        default_factory=dict, description="Per model: USD per million prompt / completion tokens."
    )
    max_cost_usd: float | None = Field(
        None,
        ge=0.0,
        description="Spending limit of one teach run (openai backend; needs teacher.prices): the estimate is checked "
        "before any request, the spent cost during the run; null: no limit.",
    )
    oracle: OracleParams = OracleParams()
    replay: ReplayParams = ReplayParams()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        if has_credentials(url):
            # Never echoed: the message would carry the password into the log.
            raise ValueError(
                f"must not hold credentials ({url_without_credentials(url)}): put the key in the environment "
                "variable named by teacher.api_key_env"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url[:40]!r}")
        return url

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"must be the name of an environment variable (not the key itself), got {name[:4]!r}...")
        return name

    @model_validator(mode="after")
    def _batch_needs_openai(self) -> TeacherParams:
        if self.batch and self.backend != OPENAI:
            raise ValueError(f"batch: true needs backend: {OPENAI} (backend is {self.backend!r})")
        return self


class FilterParams(Section):
    """``filter``: which rationales the student learns from (stage ``filter``)."""

    keep: Literal["correct", "all"] = Field(
        "correct",
        description="'correct': those whose answer is right (the paper); 'all': every non-empty rationale "
        "(the paper's ablation without filtering).",
    )


class FinetuneSetsParams(Section):
    """``finetune_sets``: the fine-tuning sets (train and validation per method) from the kept
    rationales (stage ``finetune_sets``)."""

    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of train questions held out for validation.")


class TinyModelParams(Section):
    """``student.tiny``: shape and tokenizer of the built-in tiny students (``tiny-llama``, ``tiny-gpt2``,
    ``tiny-t5``)."""

    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    tokenizer: Literal["bpe", "char", "word_char"] = Field(
        "word_char",
        description="'bpe': byte-level BPE trained on the training texts; 'char': one token per character; "
        "'word_char': words in at least 5% of the training texts are tokens, other words are spelled byte by byte.",
    )
    vocab_size: int = Field(
        1024, ge=260, description="BPE vocabulary trained on the training texts (256 bytes + merges); bpe only."
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyModelParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class LoraParams(Section):
    """``student.lora``: peft LoRA settings, used when ``student.tuning: lora``."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )


class StudentParams(Section):
    """``student``: the model fine-tuned on the rationales (stage ``finetune``)."""

    model: str = Field(
        "tiny-llama",
        description="'tiny-llama', 'tiny-gpt2' or 'tiny-t5' (built from student.tiny), 'smollm2-135m' (offline), "
        "a hub id or a path.",
    )
    tuning: Literal["full", "lora"] = Field(
        "full", description="'full' fine-tuning, or 'lora': peft LoRA adapters on a pretrained student."
    )
    tiny: TinyModelParams = TinyModelParams()
    lora: LoraParams = LoraParams()
    epochs: float = Field(20.0, gt=0.0)
    learning_rate: float = Field(0.003, gt=0.0)
    batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_length: int = Field(256, ge=16, description="Tokens per example; longer ones are cut.")
    val_accuracy: bool = Field(False, description="Decode the validation set after each epoch and log its accuracy.")
    val_max_new_tokens: int = Field(128, ge=1, description="Generation limit of that validation decoding.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto': bf16 where the device computes it natively (CUDA; a CPU with AVX-512 BF16 or AMX under "
        "FTCOT_NUMERICS=native) for pretrained students, fp16 on a CUDA GPU without bf16, else fp32; 'bf16': "
        "autocast to bfloat16 for training (fp32 weights and LoRA adapters), the weights loaded in bfloat16 for "
        "evaluation and prompting; 'fp16': the same in float16 with a loss scaler (CUDA only).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute."
    )
    quantization: Literal["none", "4bit"] = Field(
        "none",
        description="'4bit': QLoRA, the frozen base in 4-bit NF4 (bitsandbytes, CUDA only; student.tuning: lora); "
        "the saved model merges the adapters into the base in bf16.",
    )


class EvaluateParams(Section):
    """``evaluate``: decoding and scoring of the test set (stages ``evaluate`` and ``prompt``)."""

    engine: Literal[ENGINE_NAMES] = Field(
        HF, description="; ".join(f"'{name}': {what}" for name, what in ENGINES.items()) + "."
    )
    batch_size: int | Literal["auto"] = Field(
        64,
        description="Sequences decoded at once, fewer where the device's free memory would not hold them; "
        "'auto': as many as memory holds.",
    )
    memory_fraction: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of the device's free memory (CUDA, or the RAM available) that a batch may take.",
    )
    max_new_tokens: int = Field(128, ge=1, description="Generation limit per completion.")
    samples: int = Field(
        0, ge=0, description="Self-consistency: completions sampled per question for a majority vote; 0: off."
    )
    temperature: float = Field(0.7, gt=0.0, le=2.0, description="Sampling temperature of those completions.")
    few_shot_k: int = Field(4, ge=1, description="Worked examples in a few-shot-CoT prompt.")

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, size: int | str) -> int | str:
        if isinstance(size, int) and size < 1:
            raise ValueError("must be at least 1, or 'auto'")
        return size

    @field_validator("samples")
    @classmethod
    def _a_vote_needs_two(cls, samples: int) -> int:
        if samples == 1:
            raise ValueError("a majority vote needs at least 2 samples (0 turns self-consistency off)")
        return samples


class MethodsParams(Section):
    """``methods``: the rows of the paper's table that run."""

    finetune: list[Literal[FINETUNE_METHODS]] = Field(
        sorted(FINETUNE_METHODS), description="Fine-tuned students (ft_cot with diversity > 1: diverse reasoning)."
    )
    prompting: list[Literal[PROMPTING_METHODS]] = Field(
        [], description="The pretrained student prompted before fine-tuning."
    )

    @model_validator(mode="after")
    def _some_method_once(self) -> MethodsParams:
        listed = [*self.finetune, *self.prompting]
        if not listed:
            raise ValueError("no method to run: list at least one in methods.finetune or methods.prompting")
        if len(set(listed)) != len(listed):
            raise ValueError(f"a method is listed twice: {listed}")
        return self


class ReportParams(Section):
    """``report``: the summary table and samples (stage ``report``)."""

    num_samples: int = Field(2, ge=0, description="Sample rationales shown per task.")


class LaunchParams(Section):
    """``launch``: how dvc.yaml runs a stage's script (interpolated into its ``cmd``: DVC reruns a
    stage whose command changes, as it should, since several processes train another model)."""

    finetune: str = Field(
        "python",
        min_length=1,
        description="'python'; 'torchrun --standalone --nproc_per_node N' (DDP); 'accelerate launch "
        "--config_file configs/accelerate/fsdp.yaml' (FSDP, students larger than a GPU); with --num_machines, "
        "--machine_rank and --main_process_ip, several machines.",
    )

    @field_validator("finetune")
    @classmethod
    def _a_launcher(cls, command: str) -> str:
        if any(c in command for c in ";&|`$<>\n"):
            raise ValueError(f"must be a launcher and its options, without shell syntax: {command!r}")
        return command


class ParamsBase(Section):
    """The whole of params.yaml (its ``data`` section made for the tasks at hand: :func:`params_model`)."""

    seed: int = Field(0, ge=0, description="Seed of the data, the teacher's sampling and the splits.")
    seeds: list[int] = Field(
        [0],
        min_length=1,
        description="The students are trained and evaluated once per seed (initial weights, data order, sampling); "
        "the report gives the mean and sd over seeds.",
    )
    diversity: int = Field(1, ge=1, description="Rationales sampled per train question.")
    data: DataSection
    teacher: TeacherParams = TeacherParams()
    filter: FilterParams = FilterParams()
    finetune_sets: FinetuneSetsParams = FinetuneSetsParams()
    student: StudentParams = StudentParams()
    evaluate: EvaluateParams = EvaluateParams()
    methods: MethodsParams = MethodsParams()
    report: ReportParams = ReportParams()
    launch: LaunchParams = LaunchParams()

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _lora_needs_pretrained(self) -> ParamsBase:
        # Adapters on frozen random weights learn next to nothing (Last Letters: 0% parse rate,
        # every completion cut at the limit). The library still allows it, for cheap tests.
        if self.student.tuning == "lora" and self.student.model in TINY_STUDENTS:
            raise ValueError(
                f"student.tuning: lora needs a pretrained student, but student.model is {self.student.model!r} "
                "(random weights, trained from scratch): use student.tuning: full, or e.g. "
                "student.model: smollm2-135m"
            )
        return self

    @model_validator(mode="after")
    def _quantization_needs_lora(self) -> ParamsBase:
        if self.student.quantization != "none" and (
            self.student.tuning != "lora" or self.student.model in TINY_STUDENTS
        ):
            raise ValueError(
                f"student.quantization: {self.student.quantization} quantizes a pretrained base under LoRA adapters "
                f"(QLoRA): it needs student.tuning: lora and a pretrained student.model, not "
                f"{self.student.tuning} on {self.student.model!r}"
            )
        return self

    @model_validator(mode="after")
    def _prompting_needs_pretrained(self) -> ParamsBase:
        if self.methods.prompting and self.student.model in TINY_STUDENTS:
            raise ValueError(
                f"methods.prompting {self.methods.prompting} needs a pretrained student, but student.model "
                f"is {self.student.model!r} (trained from scratch); use e.g. smollm2-135m, or prompting: []"
            )
        return self


@functools.cache
def _params_model(data_model: type[DataSection]) -> type[ParamsBase]:
    return create_model("Params", __base__=ParamsBase, data=(data_model, ...))


def params_model(tasks: dict[str, Task]) -> type[ParamsBase]:
    """params.yaml's model for these tasks: ``data.<task>`` sections for those that have options."""
    return _params_model(data_params_model(tasks))


Params = params_model(TASKS)  # for the built-in tasks: documentation, library callers and tests


# Keys that were renamed: an old params file is told the new name, not only that the key is unknown.
RENAMED = {"student.method": "student.tuning", "split": "finetune_sets"}


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid parameters:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden" and key in RENAMED:
            msg = f"renamed {RENAMED[key]} (same values)"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"].endswith("_type") and e["input"] is not None:
            # Only the type is echoed, never the value: a misplaced secret must not reach a log.
            msg = f"{e['msg']} (got a {'boolean' if isinstance(e['input'], bool) else type(e['input']).__name__})"
        else:
            msg = e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


def leaf_keys(model: type[Section] = Params, prefix: str = "") -> list[str]:
    """Every settable key, dotted (``teacher.oracle.error_rate``); a mapping such as
    ``teacher.prices`` or an optional section such as ``data.gsm8k.hub`` is one key."""
    keys = []
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            keys += leaf_keys(field.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def missing_keys(
    raw: dict, model: type[Section] = Params, prefix: str = "", optional: frozenset[str] = frozenset()
) -> list[str]:
    """Keys of ``model`` absent from ``raw`` (sections that are present but not mappings are
    left to validation, which names them). ``optional``: sections that may be left out whole."""
    missing = []
    for name, field in model.model_fields.items():
        if name not in raw and f"{prefix}{name}" in optional:
            continue
        if name not in raw:
            missing.append(f"{prefix}{name}")
        elif _is_section(field.annotation) and isinstance(raw[name], dict):
            missing += missing_keys(raw[name], field.annotation, f"{prefix}{name}.", optional)
    return missing


def parse_params(raw: object, path: Path = DEFAULT_PARAMS_PATH, complete: bool = False) -> ParamsBase:
    """Validates an already-loaded params mapping; errors name ``path`` and the key.

    The tasks are the built-in ones and those of ``data.task_dir`` (a task file that does not follow
    the schema is an error naming it). ``complete``: every key must be present (what
    :func:`load_params` asks of params.yaml), so that deleting a key is an error rather than a
    silent switch to a default; a project task's own section (``data.<task>``) may be left out.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    data = raw.get("data")
    task_dir = data.get("task_dir", DEFAULT_TASK_DIR) if isinstance(data, dict) else DEFAULT_TASK_DIR
    tasks = load_tasks(task_dir if isinstance(task_dir, str) else DEFAULT_TASK_DIR)
    model = params_model(tasks)
    try:
        params = model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(path, err)) from None
    problems = [
        line
        for key in params.data.tasks
        for line in check_local_paths(tasks[key], params.data.task_dir, params.data.allow_outside_paths)
    ]
    if problems:
        raise ConfigError("\n".join(problems))
    own_sections = frozenset(f"data.{k}" for k, t in tasks.items() if not t.builtin)
    missing = missing_keys(raw, model, optional=own_sections) if complete else []
    if missing:
        lines = [f"{path}: missing key(s); params.yaml must set every parameter (see docs/parameters.md):"]
        lines += [f"  {key}: missing" for key in missing]
        raise ConfigError("\n".join(lines))
    return params


def load_params(path: str | Path = DEFAULT_PARAMS_PATH) -> ParamsBase:
    """Reads and validates params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run stages from the repository root)")
    try:
        raw = load_yaml(read_text(path))
    except DataError as err:
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, path, complete=True)


# Keys that change how the teacher's answers are obtained, never what they are: not listed among
# stage teach's params in dvc.yaml, so raising the concurrency or a timeout never re-queries a
# teacher (tests/test_stage_deps.py holds dvc.yaml to this list).
OPERATIONAL_KEYS = frozenset(
    {
        "data.mirror",  # where pinned files are read from: their checksums say what they are
        "teacher.api_key_env",
        "teacher.max_cost_usd",  # whether answers are paid for, not what they are
        "teacher.concurrency",
        "teacher.timeout",
        "teacher.max_retries",
        "teacher.batch",
        "teacher.batch_poll_seconds",
        "teacher.batch_max_requests",
        "teacher.batch_max_bytes",
        "teacher.batch_concurrency",
    }
)
