import re
from pathlib import Path

import pytest
import yaml

from ftcot.config import TINY_STUDENTS, ConfigError, leaf_keys, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {"data": {"tasks": ["coin_flip"]}}


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.diversity >= 1
    assert params.data.tasks == ["coin_flip", "last_letter_concatenation"]
    assert params.teacher.backend == "oracle"


def test_defaults_fill_missing_sections():
    params = parse_params(minimal())
    assert params.seed == 0
    assert params.student.model == "tiny-llama"
    assert params.student.tuning == "full"


def test_unknown_key_is_named():
    raw = minimal() | {"teacher": {"bakend": "oracle"}}
    with pytest.raises(ConfigError, match=r"teacher\.bakend: unknown key"):
        parse_params(raw)


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match=r"diversty: unknown key"):
        parse_params(minimal() | {"diversty": 8})


def test_unknown_task_lists_known_tasks():
    with pytest.raises(ConfigError, match=r"data\.tasks: .*unknown task\(s\) \['gsm9k'\].*coin_flip"):
        parse_params({"data": {"tasks": ["gsm9k"]}})


def test_zero_diversity_is_rejected():
    with pytest.raises(ConfigError, match=r"diversity: Input should be greater than or equal to 1"):
        parse_params(minimal() | {"diversity": 0})


def test_unknown_backend_is_rejected():
    with pytest.raises(ConfigError, match=r"teacher\.backend: Input should be 'oracle'"):
        parse_params(minimal() | {"teacher": {"backend": "gpt5"}})


def test_unknown_tuning_is_rejected_and_the_old_key_is_told_its_new_name():
    with pytest.raises(ConfigError, match=r"student\.tuning"):
        parse_params(minimal() | {"student": {"tuning": "qlora"}})
    with pytest.raises(ConfigError, match=r"student\.method: renamed student\.tuning \(same values\)"):
        parse_params(minimal() | {"student": {"method": "lora"}})
    with pytest.raises(ConfigError, match=r"  split: renamed finetune_sets \(same values\)"):
        parse_params(minimal() | {"split": {"val_fraction": 0.2}})


def test_impossible_tiny_shape_is_rejected():
    with pytest.raises(ConfigError, match=r"student\.tiny: .*divisible by n_head"):
        parse_params(minimal() | {"student": {"tiny": {"n_embd": 30, "n_head": 4}}})


def test_error_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(minimal() | {"diversity": -1}))
    with pytest.raises(ConfigError, match=str(path)):
        load_params(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_teacher_endpoint_settings_are_validated():
    with pytest.raises(ConfigError, match=r"teacher\.base_url: .*http"):
        parse_params(minimal() | {"teacher": {"base_url": "localhost:8000"}})
    with pytest.raises(ConfigError, match=r"teacher\.api_key_env: .*name of an environment variable"):
        parse_params(minimal() | {"teacher": {"api_key_env": "sk-live-123"}})
    ok = parse_params(minimal() | {"teacher": {"base_url": "http://127.0.0.1:8000/v1", "api": "completions"}})
    assert ok.teacher.api == "completions" and ok.teacher.api_key_env == "OPENAI_API_KEY"


def test_data_source_options_are_validated():
    with pytest.raises(ConfigError, match=r"data\.coin_flip\.source: Input should be 'generated' or 'paper'"):
        parse_params({"data": {"tasks": ["coin_flip"], "coin_flip": {"source": "web"}}})
    with pytest.raises(ConfigError, match=r"data\.aqua\.train_file"):
        parse_params({"data": {"tasks": ["aqua"], "aqua": {"train_file": "all"}}})
    with pytest.raises(ConfigError, match=r"data\.max_train: Input should be greater than or equal to 1"):
        parse_params({"data": {"tasks": ["aqua"], "max_train": 0}})
    ok = parse_params({"data": {"tasks": ["gsm8k"], "gsm8k": {"source": "hub", "hub": {"path": "openai/gsm8k"}}}})
    assert ok.data.gsm8k.hub.path == "openai/gsm8k" and ok.data.aqua.train_size == 10000


def _keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("prices",):
            out += _keys(v, key + ".")
        else:
            out.append(key)
    return out


PARAMETERS_PAGE = REPO / "docs" / "parameters.md"


def test_every_parameter_is_documented_in_the_parameters_page():
    page = PARAMETERS_PAGE.read_text()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    undocumented = []
    for key in _keys(params):
        head, _, leaf = key.rpartition(".")
        # a row may group keys: `student.tiny.{n_layer,n_head,n_embd}` or `data.{gsm8k,aqua}.source`
        if f"`{key}`" not in page and not any(
            leaf in row and (head.split(".")[0] in row) for row in page.splitlines() if row.startswith("| `")
        ):
            undocumented.append(key)
    assert not undocumented, f"params.yaml keys missing from docs/parameters.md: {undocumented}"


# ---- one source of values: params.yaml; the code's defaults and docs/parameters.md agree with it --


def repo_params_raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def dotted(obj: dict, key: str):
    for part in key.split("."):
        obj = obj[part]
    return obj


def test_code_defaults_equal_params_yaml():
    params = load_params(REPO / "params.yaml")
    defaults = parse_params({"data": {"tasks": params.data.tasks}})  # tasks: the one key without a default
    assert defaults.model_dump() == params.model_dump()


def test_params_yaml_sets_every_key():
    raw = repo_params_raw()
    for key in leaf_keys():
        dotted(raw, key)  # KeyError names the key


@pytest.mark.parametrize("key", ["teacher.temperature", "student.tiny.n_embd", "seed", "data.gsm8k.hub"])
def test_a_missing_key_in_the_file_is_an_error_naming_it(tmp_path, key):
    raw = repo_params_raw()
    *parents, last = key.split(".")
    del (dotted(raw, ".".join(parents)) if parents else raw)[last]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"params.yaml: missing key.*\n  {re.escape(key)}: missing"):
        load_params(path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("diversity", True, "diversity: Input should be a valid integer (got a boolean)"),
        ("student.epochs", "3", "student.epochs: Input should be a valid number (got a str)"),
        ("teacher.eval_test", "yes", "teacher.eval_test: Input should be a valid boolean (got a str)"),
        ("seed", 1.5, "seed: Input should be a valid integer (got a float)"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error(key, value, message):
    raw = repo_params_raw()
    *parents, last = key.split(".")
    (dotted(raw, ".".join(parents)) if parents else raw)[last] = value
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_an_integer_is_a_valid_float():
    raw = repo_params_raw()
    raw["student"]["epochs"] = 3
    assert parse_params(raw).student.epochs == 3.0


def documented_parameter_table() -> dict[str, str]:
    """``key -> default`` from docs/parameters.md's table; ``a.{b,c}.d`` and ``x, y`` rows expand."""
    text = PARAMETERS_PAGE.read_text()
    table = text[text.index("| Key | Default | Meaning |") :]
    table = table[: table.index("\n\n")] if "\n\n" in table else table
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\| (`[^|]+`) \| `([^|]*)` \|", line)
        if not m:
            continue
        keys = []
        for spec in re.findall(r"`([^`]+)`", m.group(1)):
            brace = re.search(r"\{([^}]*)\}", spec)
            alternatives = brace.group(1).split(",") if brace else [""]
            keys += [spec.replace(brace.group(0), a) if brace else spec for a in alternatives]
        defaults = [m.group(2)]
        if len(keys) > 1 and not m.group(2).startswith(("[", "{")) and m.group(2).count(",") == len(keys) - 1:
            defaults = [d.strip() for d in m.group(2).split(",")]
        for i, key in enumerate(keys):
            rows[key] = defaults[i] if len(defaults) > 1 else defaults[0]
    return rows


def test_the_parameters_page_lists_every_parameter_with_its_params_yaml_value():
    rows = documented_parameter_table()
    assert len(rows) >= 40
    raw = repo_params_raw()
    missing = [k for k in leaf_keys() if k not in rows]
    assert not missing, f"docs/parameters.md's table lacks {missing}"
    unknown = [k for k in rows if k not in leaf_keys()]
    assert not unknown, f"docs/parameters.md's table names keys that do not exist: {unknown}"
    wrong = {k: (rows[k], dotted(raw, k)) for k in rows if yaml.safe_load(rows[k]) != dotted(raw, k)}
    assert not wrong, f"docs/parameters.md default != params.yaml value: {wrong}"


def test_lora_on_a_student_trained_from_scratch_is_a_parameter_error():
    for model in TINY_STUDENTS:
        with pytest.raises(ConfigError, match=r"student.tuning: lora needs a pretrained student, but student.model"):
            parse_params(minimal() | {"student": {"model": model, "tuning": "lora"}})
    assert parse_params(minimal() | {"student": {"model": "smollm2-135m", "tuning": "lora"}}).student.tuning == "lora"


def test_seeds_are_distinct_non_negative_and_at_least_one():
    assert parse_params(minimal() | {"seeds": [0, 1, 2]}).seeds == [0, 1, 2]
    for bad in ([], [0, 0], [-1], "0"):
        with pytest.raises(ConfigError, match="seeds"):
            parse_params(minimal() | {"seeds": bad})
