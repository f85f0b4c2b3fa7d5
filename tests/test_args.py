import pytest
import yaml
from transformers import TrainingArguments

from hfopt.args import DataArguments, ModelArguments, RunArguments, parse_args, save_config
from hfopt.errors import InputError

TYPES = (ModelArguments, DataArguments, RunArguments, TrainingArguments)


def write_yaml(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {
        "learning_rate": 3e-4, "num_train_epochs": 2, "text_column_names": ["a", "b"], "max_seq_length": 32,
        "output_dir": str(tmp_path / "out"),
    })
    model_args, data_args, run_args, training_args = parse_args(
        TYPES, recipe="r", defaults={"learning_rate": 1e-5, "per_device_train_batch_size": 4},
        argv=["--config", config, "--learning_rate", "5e-5", "--text_column_names", "x"],
    )
    assert training_args.learning_rate == 5e-5  # flag beats YAML
    assert training_args.num_train_epochs == 2  # YAML beats the dataclass default
    assert training_args.per_device_train_batch_size == 4  # recipe default kept
    assert data_args.text_column_names == ["x"]
    assert data_args.max_seq_length == 32 and isinstance(data_args.max_seq_length, int)
    assert training_args.hfopt_config["learning_rate"] == 5e-5


def test_output_dir_defaults_to_outputs_recipe():
    *_, training_args = parse_args(TYPES, recipe="finetune_bert", argv=[])
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
    path = save_config(first[-1].hfopt_config, tmp_path)
    again = parse_args(TYPES, recipe="r", argv=["--config", str(path)])
    assert again[-1].learning_rate == 7e-5
    assert again[0] == first[0] and again[1] == first[1]
    assert again[-1].hfopt_config == first[-1].hfopt_config


def test_token_is_not_written_into_the_config(tmp_path):
    *_, training_args = parse_args(TYPES, recipe="r", argv=["--token", "hf_secret"])
    assert "hf_secret" not in str(training_args.hfopt_config)
