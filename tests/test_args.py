"""hfopt.args: defaults < YAML < flags, unknown keys and bad values named, the resolved config returned and
reproducible, and every dataclass checking its own values."""

import re

import pytest
import yaml
from transformers import TrainingArguments

from hfopt.args import (
    DataArguments,
    LanguageModelingArguments,
    ModelArguments,
    RunArguments,
    StrategyArguments,
    parse_args,
)
from hfopt.errors import InputError
from hfopt.run import save_config
from tests.testing_utils import require_optuna

TYPES = (ModelArguments, DataArguments, RunArguments, TrainingArguments)


def write_yaml(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path):
    config = write_yaml(
        tmp_path / "c.yaml",
        {
            "learning_rate": 3e-4,
            "num_train_epochs": 2,
            "text_column_names": ["a", "b"],
            "max_seq_length": 32,
            "output_dir": str(tmp_path / "out"),
        },
    )
    model_args, data_args, run_args, training_args, resolved = parse_args(
        TYPES,
        recipe="r",
        defaults={"learning_rate": 1e-5, "per_device_train_batch_size": 4},
        argv=["--config", config, "--learning_rate", "5e-5", "--text_column_names", "x"],
    )
    assert training_args.learning_rate == 5e-5  # flag beats YAML
    assert training_args.num_train_epochs == 2  # YAML beats the dataclass default
    assert training_args.per_device_train_batch_size == 4  # recipe default kept
    assert data_args.text_column_names == ["x"]
    assert data_args.max_seq_length == 32 and isinstance(data_args.max_seq_length, int)
    assert resolved["learning_rate"] == 5e-5 and resolved["text_column_names"] == ["x"]
    assert not hasattr(training_args, "hfopt_config")  # returned, never hung on transformers' object


def test_output_dir_defaults_to_outputs_recipe():
    *_, training_args, _ = parse_args(TYPES, recipe="finetune_bert", argv=[])
    assert training_args.output_dir == "outputs/finetune_bert"


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    config = write_yaml(tmp_path / "bad.yaml", {"learning_rate": 1e-4, "lerning_rate": 1e-4})
    with pytest.raises(InputError, match=r"unknown key 'lerning_rate' in config file .*bad\.yaml.*learning_rate"):
        parse_args(TYPES, recipe="r", argv=["--config", config])


def test_yaml_type_error_names_file_and_flag(tmp_path):
    config = write_yaml(tmp_path / "typed.yaml", {"num_train_epochs": "many"})
    with pytest.raises(InputError, match=r"typed\.yaml.*num_train_epochs.*many"):
        parse_args(TYPES, recipe="r", argv=["--config", config])


def test_missing_config_file_and_bad_flag(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        parse_args(TYPES, recipe="r", argv=["--config", str(tmp_path / "none.yaml")])
    with pytest.raises(InputError, match="unknown argument --no_such_flag"):
        parse_args(TYPES, recipe="r", argv=["--no_such_flag", "1"])
    with pytest.raises(InputError, match="unknown argument --learnin_rate .did you mean '--learning_rate'"):
        parse_args(TYPES, recipe="r", argv=["--learnin_rate", "1"])


def test_saved_config_reproduces_the_arguments(tmp_path):
    argv = ["--learning_rate", "7e-5", "--train_file", "t.csv", "--num_labels", "3", "--output_dir", str(tmp_path)]
    first = parse_args(TYPES, recipe="r", argv=argv)
    path = save_config(first[-1], tmp_path)
    again = parse_args(TYPES, recipe="r", argv=["--config", str(path)])
    assert again[-2].learning_rate == 7e-5
    assert again[0] == first[0] and again[1] == first[1]
    assert again[-1] == first[-1]


def test_token_is_not_written_into_the_config():
    *_, resolved = parse_args(TYPES, recipe="r", argv=["--token", "hf_secret"])
    assert "hf_secret" not in str(resolved)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--learning_rate", "0"], "learning_rate must be > 0"),
        (["--learning_rate", "nan"], "learning_rate must be > 0"),
        (["--num_train_epochs", "0"], "num_train_epochs must be > 0"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be ≥ 1"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be ≥ 1"),
        (["--max_seq_length", "1"], "max_seq_length must be ≥ 2"),
        (["--max_train_samples", "0"], "max_train_samples must be ≥ 1"),
        (["--num_labels", "1"], "num_labels must be ≥ 2"),
        (["--validation_split_percentage", "100"], "validation_split_percentage must be in (0, 100)"),
        (["--dropout", "1.5"], "dropout must be in [0, 1)"),
    ],
)
def test_sizes_counts_and_rates_are_checked_up_front(argv, words):
    with pytest.raises(InputError) as err:
        parse_args(TYPES, recipe="r", argv=argv)
    assert words in str(err.value)


@pytest.mark.parametrize(
    "cls, kwargs, words",
    [
        (LanguageModelingArguments, {"block_size": 1}, "block_size must be ≥ 2"),
        (LanguageModelingArguments, {"block_size": 0}, "block_size must be ≥ 2"),
        (StrategyArguments, {"num_frozen_layers": -1}, "num_frozen_layers must be ≥ 0"),
        (StrategyArguments, {"unfreeze_every_n_steps": 0}, "unfreeze_every_n_steps must be ≥ 1"),
        (StrategyArguments, {"lr_schedule": "cosinus"}, "lr_schedule must be one of exponential, step, got 'cosinus'"),
        (StrategyArguments, {"layerwise_lr_decay": 0.0}, "layerwise_lr_decay must be in (0, 1]"),
        (StrategyArguments, {"hp_search_space": "{not json"}, "hp_search_space is not valid JSON"),
    ],
)
def test_each_dataclass_checks_its_own_values(cls, kwargs, words):
    with pytest.raises(InputError) as err:
        cls(**kwargs)
    assert words in str(err.value)


def test_early_stopping_needs_a_metric_and_an_eval_strategy():
    with pytest.raises(InputError, match="early stopping on a metric needs --metric_for_best_model"):
        parse_args((StrategyArguments, TrainingArguments), recipe="r", argv=["--early_stopping_patience", "2"])


def _recipe_dataclasses():
    """Every argument dataclass of every recipe (TrainingArguments subclasses: the fields they add), and the
    compression pipeline's config and the optimize search's."""
    import dataclasses
    import importlib.util
    from pathlib import Path

    from hfopt.args import argument_dataclasses
    from hfopt.pipeline import CompressionConfig

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    transformers_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    from hfopt.optimize import OptimizeConfig, SearchSpace

    found = {part: list(dataclasses.fields(part)) for part in (*CompressionConfig.PARTS, OptimizeConfig, SearchSpace)}
    for name in ("finetune_bert", "finetune_gpt", "finetune_translation", "distill_bert"):
        spec = importlib.util.spec_from_file_location(f"args_{name}", recipes / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for cls in argument_dataclasses(module.ARGUMENTS):
            own = [f for f in dataclasses.fields(cls) if f.name not in transformers_fields]
            if own or not issubclass(cls, TrainingArguments):
                found[cls] = own
    return found


def test_every_argument_field_has_help_and_small_dataclasses():
    found = _recipe_dataclasses()
    from hfopt.pipeline import CompressionConfig

    # the groups' parts are checked like any dataclass
    assert set(StrategyArguments.PARTS) | set(CompressionConfig.PARTS) <= set(found)
    undocumented = [
        f"{cls.__name__}.{f.name}"
        for cls, fields in found.items()
        for f in fields
        if len(f.metadata.get("help", "")) < 10
    ]
    assert not undocumented
    wide = {cls.__name__: len(fields) for cls, fields in found.items() if len(fields) > 13}  # one concern each
    assert not wide


def test_choices_are_in_help_checked_by_the_parser_and_in_python(tmp_path):
    from hfopt.args import (
        LR_SCHEDULES,
        BatchingArguments,
        CompressionArguments,
        MonitoringArguments,
        _Parser,
        argument_dataclasses,
    )
    from hfopt.schedules import SCHEDULES

    assert set(LR_SCHEDULES) == set(SCHEDULES)  # the choices of --lr_schedule are the schedules hfopt has
    help_text = _Parser(argument_dataclasses([StrategyArguments, CompressionArguments])).format_help()
    for shown in ("{samples,length,tokens}", "{stop,skip}", "{exponential,step}", "{maximize,minimize}", "{int8}"):
        assert shown in help_text
    for section in ("early stopping:", "freezing:", "batching:", "hyperparameter search:"):
        assert section in help_text
    config = write_yaml(tmp_path / "c.yaml", {"watchdog": "ignore"})
    with pytest.raises(InputError, match=r"c\.yaml: argument --watchdog.*invalid choice: 'ignore'"):
        parse_args([StrategyArguments, TrainingArguments], "r", ["--config", config])
    with pytest.raises(InputError, match="batching must be one of samples, length, tokens, got 'rows'"):
        BatchingArguments(batching="rows")
    with pytest.raises(InputError, match="watchdog must be one of stop, skip"):
        MonitoringArguments(watchdog="ignore")


def test_strategy_arguments_group_reads_writes_and_checks_by_part():
    from hfopt.args import BatchingArguments, EarlyStoppingArguments

    strategy = StrategyArguments(early_stopping_patience=3, batching="length")
    assert strategy.early_stopping_patience == 3 and strategy.batching == "length" and strategy.l1_lambda == 0
    strategy.batching = "samples"
    assert next(p for p in strategy.parts if isinstance(p, BatchingArguments)).batching == "samples"
    with pytest.raises(AttributeError, match="no field 'batchng'"):
        strategy.batchng = "x"
    with pytest.raises(TypeError, match="did you mean 'batching'"):
        StrategyArguments(bathcing="length")
    with pytest.raises(InputError, match="early_stopping_patience must be ≥ 1"):
        StrategyArguments(early_stopping_patience=0)
    parsed, _training_args, _config = parse_args([StrategyArguments, TrainingArguments], "r", ["--batching", "length"])
    assert isinstance(parsed, StrategyArguments) and parsed.batching == "length"
    assert isinstance(parsed.parts[0], EarlyStoppingArguments)
    assert parsed == StrategyArguments(batching="length")
    import copy

    copied = copy.copy(parsed)
    copied.batching = "samples"
    assert parsed.batching == "length"  # a copy owns its parts
    changed = parsed.replace(batching="tokens", max_tokens_per_batch=256, l1_lambda=0.1)
    assert (changed.batching, changed.l1_lambda, parsed.batching) == ("tokens", 0.1, "length")
    assert changed.to_dict()["max_tokens_per_batch"] == 256 and len(changed.to_dict()) == 31
    with pytest.raises(InputError, match="--batching tokens goes with --max_tokens_per_batch"):
        parsed.replace(batching="tokens")


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"hp_search_trials": 2, "hp_search_storage": "/no/such/folder/search.log"}, "its folder /no/such/folder does"),
        ({"hp_search_trials": 2, "hp_search_storage": "sqlite://"}, "a sqlite URL names its file"),
        ({"hp_search_trials": 2, "hp_search_storage": "/tmp"}, "hp_search_storage /tmp is a folder"),
        ({"hp_search_storage": "search.log"}, "--hp_search_storage goes with --hp_search_trials N"),
        ({"hp_search_trials": 2, "hp_search_study_name": "a"}, "--hp_search_study_name goes with --hp_search_storage"),
    ],
)
def test_a_search_storage_that_cannot_be_used_is_one_line_when_parsed(values, expected):
    from hfopt.args import SearchArguments

    with pytest.raises(InputError, match=re.escape(expected)):
        SearchArguments(**values)


@require_optuna
def test_a_search_database_that_cannot_be_opened_is_one_line(tmp_path):
    from hfopt.study.search import open_storage

    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    with pytest.raises(InputError, match=r"hp_search_storage sqlite:///.*/blocked/search.db cannot be opened: "):
        open_storage(f"sqlite:///{blocked}/search.db")
    journal = open_storage(str(tmp_path / "search.log"))  # a journal file is made on first use
    assert type(journal).__name__ == "JournalStorage"
