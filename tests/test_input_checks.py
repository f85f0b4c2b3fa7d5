"""Bad input is one line before any work, never a silent wrong result: labels that are fractions or mix numbers
and names, YAML keys given twice, a model that cannot do the recipe's task, a hub name that cannot be reached,
a flag whose package is missing, texts longer than the model's positions; and a real full disk at a save."""

import importlib.util
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from hfopt.args import DataArguments, load_yaml
from hfopt.data import LabelSpace, load_raw_datasets
from hfopt.errors import InputError
from tests.testing_utils import (
    make_tiny_bert,
    one_error_line,
    read_json,
    run_recipe,
    story_lines,
    tiny_bert_args,
    write_csv,
)

# --- labels: class ids or names, never numbers silently rounded ---------------------------------------------------


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows as .csv, .jsonl or .parquet by path's suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    else:
        header = list(rows[0])
        path.write_text(",".join(header) + "\n" + "".join(",".join(str(r[k]) for k in header) + "\n" for r in rows))
    return path


def label_space(tmp_path, train_labels, validation_labels=(0, 1), suffix=".csv", num_labels=None):
    train = write_rows(tmp_path / f"train{suffix}", [{"text": f"t{i}", "label": v} for i, v in enumerate(train_labels)])
    validation = write_rows(
        tmp_path / f"validation{suffix}", [{"text": f"v{i}", "label": v} for i, v in enumerate(validation_labels)]
    )
    raw, sources = load_raw_datasets(DataArguments(train_file=str(train), validation_file=str(validation)))
    return LabelSpace.from_datasets(raw, "label", sources, num_labels=num_labels)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_fractional_labels_are_refused_naming_file_column_and_row(tmp_path, suffix):
    with pytest.raises(InputError, match=r"train\S*: label 0\.5 at row index 2 of column 'label' is not a class id"):
        label_space(tmp_path, [0, 1, 0.5, 1.7], suffix=suffix)
    with pytest.raises(
        InputError, match=r"validation\S*: label 1\.7 at row index 1 of column 'label' is not a class id"
    ):
        label_space(tmp_path, [0, 1, 1, 0], validation_labels=[0, 1.7], suffix=suffix)


@pytest.mark.parametrize(
    "labels, words",
    [
        (["0.5", "1", "0"], "label '0.5' at row index 0 of column 'label' is not a class id"),  # text holding numbers
        (["1", "pos", "neg"], "mixes numbers and names ('1' at row index 0, 'pos' at row index 1)"),
        (["1", "1.0", "0"], "labels '1' (row index 0) and '1.0' (row index 1) of column 'label' are the same class"),
        (["pos", " pos", "neg"], "label ' pos' at row index 1 of column 'label' has spaces around it"),
    ],
)
def test_text_labels_that_would_make_wrong_classes_are_refused(tmp_path, labels, words):
    rows = [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)]
    write_rows(tmp_path / "train.jsonl", rows)
    write_rows(tmp_path / "validation.jsonl", rows)
    raw, sources = load_raw_datasets(
        DataArguments(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "validation.jsonl"))
    )
    with pytest.raises(InputError, match=f"train_file .*train.jsonl: .*{re.escape(words)}"):
        LabelSpace.from_datasets(raw, "label", sources)


def test_a_missing_label_or_an_id_far_beyond_the_classes_is_refused(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,0\nb,\nc,1\n")
    write_rows(tmp_path / "validation.csv", [{"text": "v", "label": 0}, {"text": "w", "label": 1}])
    raw, sources = load_raw_datasets(
        DataArguments(train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "validation.csv"))
    )
    with pytest.raises(InputError, match="missing 'label' at row index 1"):
        LabelSpace.from_datasets(raw, "label", sources)
    with pytest.raises(
        InputError, match="label 2023 at row index 2 of column 'label' would make 2024 classes of which 3"
    ):
        label_space(tmp_path, [0, 1, 2023])


def test_good_labels_still_load_ids_whole_floats_numbers_as_text_and_bools(tmp_path):
    assert label_space(tmp_path, [0, 1, 1.0, 2]).names == ["0", "1", "2"]
    assert label_space(tmp_path, ["2", "10", "1"], validation_labels=["1", "2"], suffix=".jsonl").names == [
        "1",
        "2",
        "10",
    ]
    space = label_space(tmp_path, [True, False, True], validation_labels=[False, True], suffix=".jsonl")
    assert space.names == ["False", "True"] and space.to_id(True) == 1


# --- YAML: a key given twice -----------------------------------------------------------------------------------


def test_a_yaml_key_given_twice_is_refused_with_its_lines(tmp_path):
    with pytest.raises(InputError, match=r"c.yaml: key 'learning_rate' is given twice \(lines 1 and 3\); keep one"):
        load_yaml("learning_rate: 0.1\nseed: 3\nlearning_rate: 0.2\n", "c.yaml")
    with pytest.raises(InputError, match=r"key 'r' is given twice \(lines 3 and 4\)"):
        load_yaml("variants:\n  - name: a\n    args: {r: 1,\n      r: 2}\n", "s.yaml")
    assert load_yaml("a: &d {x: 1}\nb:\n  <<: *d\n  x: 2\n", "m.yaml") == {"a": {"x": 1}, "b": {"x": 2}}
    with pytest.raises(InputError, match=r"key 'a' is given twice \(line 1, columns 2 and 8\)"):
        load_yaml("{a: 1, a: 2}", "flow.yaml")  # both on one line


def test_duplicate_keys_in_accelerate_configs_and_study_files(tmp_path):
    from hfopt.accelerate_config import check_accelerate_config
    from hfopt.study.spec import load_study

    config = tmp_path / "acc.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\nnum_processes: 1\nnum_processes: 2\n")
    with pytest.raises(InputError, match=r"accelerate config .*acc.yaml: key 'num_processes' is given twice \(lines 2"):
        check_accelerate_config(str(config))
    study = tmp_path / "study.yaml"
    study.write_text("recipe: finetune_bert\nseeds: [1]\nrecipe: finetune_gpt\nvariants: []\n")
    with pytest.raises(InputError, match=r"study file .*study.yaml: key 'recipe' is given twice \(lines 1 and 3\)"):
        load_study(study)


# --- models that cannot do the task ----------------------------------------------------------------------------


def test_a_model_that_cannot_do_the_task_is_refused_by_type():
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        BertConfig,
        GPT2Config,
        MarianConfig,
        T5Config,
    )

    from hfopt.models import check_model_task

    with pytest.raises(InputError, match="model type 'bert' is a bidirectional encoder"):
        check_model_task(BertConfig(), AutoModelForCausalLM)
    check_model_task(BertConfig(is_decoder=True), AutoModelForCausalLM)  # BERT as a decoder is causal
    check_model_task(GPT2Config(), AutoModelForCausalLM)
    with pytest.raises(InputError, match="model type 't5' cannot do causal language modelling: it is an encoder-dec"):
        check_model_task(T5Config(), AutoModelForCausalLM)
    with pytest.raises(InputError, match="model type 'gpt2' cannot do sequence-to-sequence generation: it is a decod"):
        check_model_task(GPT2Config(), AutoModelForSeq2SeqLM)
    with pytest.raises(InputError, match="model type 'marian' cannot do sequence classification"):
        check_model_task(MarianConfig(), AutoModelForSequenceClassification)


def test_a_causal_lm_whose_predictions_see_later_tokens_is_refused():
    from transformers import BertConfig, BertLMHeadModel, GPT2Config, GPT2LMHeadModel

    from hfopt.models import check_causal

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    with pytest.raises(InputError, match=r"model type 'bert' \(BertLMHeadModel\) is not causal"):
        check_causal(BertLMHeadModel(BertConfig(**small)))
    check_causal(BertLMHeadModel(BertConfig(**small, is_decoder=True)))
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=50)).train()
    check_causal(model)
    assert model.training  # the check leaves the mode as it was


def test_the_tokenizer_is_capped_at_the_model_positions_and_longer_lengths_are_refused(tiny_bert):
    from transformers import AutoConfig, AutoTokenizer, RobertaConfig

    from hfopt.models import check_max_length, fit_tokenizer_to_positions, model_max_positions

    config = AutoConfig.from_pretrained(tiny_bert)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, model_max_length=10**6)
    fit_tokenizer_to_positions(tokenizer, config)
    assert tokenizer.model_max_length == 64
    with pytest.raises(InputError, match=r"max_seq_length 128 is longer than the model's 64 positions \(model type"):
        check_max_length(128, "max_seq_length", config)
    check_max_length(64, "max_seq_length", config)
    assert model_max_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512


# --- recipes: the line and exit code 2 -------------------------------------------------------------------------


def story_files(tmp_path):
    train, validation = tmp_path / "train.txt", tmp_path / "validation.txt"
    train.write_text("\n".join(story_lines(40, seed=1)) + "\n")
    validation.write_text("\n".join(story_lines(10, seed=2)) + "\n")
    return ["--train_file", train, "--validation_file", validation]


@pytest.mark.slow
def test_finetune_gpt_refuses_a_bidirectional_encoder_from_scratch_and_pretrained(tmp_path):
    tiny = ["--tokenizer_vocab_size", "300", "--block_size", "16", "--output_dir", tmp_path / "o"]
    result = run_recipe(
        "finetune_gpt",
        [
            *story_files(tmp_path),
            "--model_type",
            "bert",
            "--config_overrides",
            "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64",
            *tiny,
        ],
        check=False,
    )
    assert result.returncode == 2
    assert "model type 'bert' is a bidirectional encoder (config.is_decoder is false)" in one_error_line(result)
    bert = make_tiny_bert(tmp_path / "bert", words=" ".join(story_lines(40, seed=1)).split())
    result = run_recipe(
        "finetune_gpt",
        [*story_files(tmp_path), "--model_name_or_path", bert, "--block_size", "16", *tiny[4:]],
        check=False,
    )
    assert result.returncode == 2 and "model type 'bert' is a bidirectional encoder" in one_error_line(result)
    assert not (tmp_path / "o" / "run_info.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, words",
    [
        (
            ["--model_name_or_path", "no-such-org/no-such-model"],
            "model_name_or_path no-such-org/no-such-model cannot be",
        ),
        (["--dataset_name", "no-such-org/no-such-data"], "dataset_name no-such-org/no-such-data cannot be reached or"),
        (["--report_to", "wandb"], "--report_to wandb needs the package 'wandb', which is not installed"),
        (["--optim", "adamw_bnb_8bit"], "--optim adamw_bnb_8bit needs the package 'bitsandbytes', which is not inst"),
        (["--max_seq_length", "128"], "max_seq_length 128 is longer than the model's 64 positions"),
        (["--label_column_name", "score"], "label 0.5 at row index 0 of column 'score' is not a class id"),
    ],
)
def test_finetune_bert_names_the_mistake_in_one_line(tiny_bert, easy_task, tmp_path, extra, words):
    for flag, package in (("wandb", "wandb"), ("adamw_bnb_8bit", "bitsandbytes")):
        if flag in extra and importlib.util.find_spec(package) is not None:
            pytest.skip(f"{package} is installed here")
    task = dict(easy_task)
    if "score" in extra:
        rows = [(f"text {i}", [0.5, 1, 0, 1.7][i % 4]) for i in range(20)]
        task["train"] = write_csv(tmp_path / "scores.csv", rows, header=("sentence", "score"))
        task["validation"] = task["train"]
    args = tiny_bert_args(tiny_bert, task, tmp_path / "out", "--max_steps", "2")
    if "--model_name_or_path" in extra or "--dataset_name" in extra:
        args = [a for a in args if a != tiny_bert]
        args.remove("--model_name_or_path")
    if "--dataset_name" in extra:
        for flag in ("--train_file", "--validation_file"):
            i = args.index(flag)
            del args[i : i + 2]
        args += ["--model_type", "bert"]
    result = run_recipe("finetune_bert", [*args, *extra], check=False, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    line = one_error_line(result)
    assert words in line
    if "no-such" in " ".join(map(str, extra)):
        assert "HF_HUB_OFFLINE is set" in line and "typo" in line


@pytest.mark.slow
def test_finetune_bert_with_a_duplicate_yaml_key_says_which(tiny_bert, easy_task, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 0.001\nnum_train_epochs: 1\nlearning_rate: 0.1\n")
    result = run_recipe(
        "finetune_bert", ["--config", config, *tiny_bert_args(tiny_bert, easy_task, tmp_path / "o")], check=False
    )
    assert result.returncode == 2
    assert "c.yaml: key 'learning_rate' is given twice (lines 1 and 3); keep one" in one_error_line(result)


@pytest.mark.slow
def test_a_bert_from_scratch_takes_texts_longer_than_its_positions_by_truncating(easy_task, tmp_path):
    """A WordPiece tokenizer trained from scratch has no length limit: texts longer than the model's positions
    crashed mid-training; the tokenizer is now capped at the positions."""
    long_rows = [(" ".join(["word"] * 60) + f" {i % 2}", i % 2) for i in range(40)]
    train = write_csv(tmp_path / "long.csv", long_rows)
    result = run_recipe(
        "finetune_bert",
        [
            *[
                "--model_type",
                "bert",
                "--train_file",
                train,
                "--validation_file",
                train,
                "--output_dir",
                tmp_path / "o",
            ],
            "--config_overrides",
            "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64,max_position_embeddings=16",
            *["--max_steps", "2", "--save_strategy", "no", "--disable_tqdm", "true"],
        ],
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# --- a real full disk -------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on a tmpfs of that many bytes (unmounted at the end); skips without permission."""
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()[:200]}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def used_bytes(folder: Path) -> int:
    """Bytes folder takes on a disk, whole 4 KiB pages per file as tmpfs counts them."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file())


def fill(folder: Path, leave: int) -> Path:
    """Write a file that leaves `leave` bytes free on folder's filesystem."""
    free = shutil.disk_usage(folder).free
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def checkpoint_bytes(model_folder: Path, scratch: Path) -> int:
    """What a finetune_bert checkpoint of the model in model_folder takes on a tmpfs (whole 4 KiB pages per file),
    made here as Trainer makes one, without a run: the model and tokenizer saved (model.safetensors, config.json,
    tokenizer files), AdamW's state after a step (optimizer.pt), the RNG states (rng_state.pth), and five pages
    for scheduler.pt, training_args.bin and trainer_state.json (1.5 KB, 5 KB and 1-2 KB in a real one)."""
    import io
    import random

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def saved(obj) -> int:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return -(-buffer.getbuffer().nbytes // 4096) * 4096

    model = AutoModelForSequenceClassification.from_pretrained(model_folder)
    model.save_pretrained(scratch)
    AutoTokenizer.from_pretrained(model_folder).save_pretrained(scratch)
    optimizer = torch.optim.AdamW(model.parameters())
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # AdamW's state: a step count and two moments per parameter
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    return used_bytes(scratch) + saved(optimizer.state_dict()) + saved(rng) + 5 * 4096


@pytest.mark.slow
def test_a_real_full_disk_at_the_final_save_keeps_the_old_model_and_the_rerun_completes(
    tiny_bert, easy_task, tmp_path, small_disk
):
    """The model already in output_dir is a copy of the starting one (--start_fresh trains over a model folder
    whatever put it there); the disk keeps half its size free: the run trains, writes its record (a few pages)
    and runs out of space saving the final model."""
    disk = small_disk(64 << 20)
    out = disk / "out"
    shutil.copytree(tiny_bert, out)
    args = tiny_bert_args(tiny_bert, easy_task, out, "--num_train_epochs", "1", "--save_strategy", "no")
    model_before = (out / "model.safetensors").read_bytes()
    filler = fill(disk, leave=len(model_before) // 2)
    result = run_recipe("finetune_bert", [*args, "--start_fresh", "true", "--seed", "3"], check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "stopped: no space left on the device" in result.stderr
    assert "while saving the final model" in result.stderr
    assert (out / "model.safetensors").read_bytes() == model_before
    assert not (out / ".final-model.tmp").exists()
    filler.unlink()
    run_recipe("finetune_bert", [*args, "--start_fresh", "true", "--seed", "3"])
    assert (out / "model.safetensors").read_bytes() != model_before


@pytest.mark.slow
def test_a_real_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes(
    tiny_bert, easy_task, tmp_path, small_disk
):
    args = [
        *["--max_steps", "20", "--save_strategy", "steps", "--save_steps", "10", "--per_device_train_batch_size", "4"],
        *["--save_total_limit", "3"],
    ]
    checkpoint = checkpoint_bytes(tiny_bert, tmp_path / "measured")
    disk = small_disk(64 << 20)
    out = disk / "out"
    full_args = tiny_bert_args(tiny_bert, easy_task, out, *args)
    filler = fill(disk, leave=int(checkpoint * 1.5))  # room for checkpoint-10, not for checkpoint-20 beside it
    result = run_recipe("finetune_bert", full_args, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = next(line for line in result.stderr.splitlines() if line.startswith("stopped: "))
    assert "no space left" in line
    assert (out / "checkpoint-10" / "trainer_state.json").exists()
    assert not (out / "checkpoint-20").exists()
    filler.unlink()
    run_recipe("finetune_bert", full_args)
    assert read_json(out / "trainer_state.json")["global_step"] == 20
    assert (out / "model.safetensors").exists()


# --- a bug is a traceback: only a library's refusal of the user's input becomes one line -------------------------


def test_raised_in_names_the_innermost_frames_package():
    from hfopt.errors import raised_in

    with pytest.raises(json.JSONDecodeError) as library:
        json.loads("{broken")
    with pytest.raises(KeyError) as ours:
        {}["missing"]
    assert raised_in(library.value, "json")
    assert not raised_in(library.value, "hfopt")
    assert not raised_in(ours.value, "json")


def test_a_bug_in_the_data_reader_keeps_its_traceback(tmp_path, monkeypatch):
    """A planted bug inside the wrapped load_dataset call propagates as itself (a recipe would exit 1 with the
    traceback), while a file the reader refuses is still one InputError line."""
    import hfopt.data.files as files

    good = write_csv(tmp_path / "train.csv", [["fine", 1], ["bad", 0]])

    def planted(*args, **kwargs):
        raise TypeError("planted bug")

    with monkeypatch.context() as patch:
        patch.setattr(files.datasets, "load_dataset", planted)
        with pytest.raises(TypeError, match="planted bug"):
            files.load_data_file(str(good), "train_file", (".csv",))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputError, match=r"broken\.parquet could not be read as parquet"):
        files.load_data_file(str(broken), "train_file broken.parquet", (".parquet",))


def test_a_bug_in_argument_checks_keeps_its_traceback(monkeypatch):
    """TrainingArguments' own refusals stay one line; an error raised in hfopt's argument code is a bug."""
    from transformers import TrainingArguments

    from hfopt.args import ModelArguments, RunArguments, parse_args

    types = (ModelArguments, DataArguments, RunArguments, TrainingArguments)
    with pytest.raises(InputError, match="load_best_model_at_end"):
        parse_args(types, recipe="r", argv=["--load_best_model_at_end", "true", "--eval_strategy", "no"])

    def planted(self):
        raise TypeError("planted bug")

    monkeypatch.setattr(DataArguments, "__post_init__", planted)
    with pytest.raises(TypeError, match="planted bug"):
        parse_args(types, recipe="r", argv=[])


def test_a_bug_while_loading_a_model_keeps_its_traceback(tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from hfopt.models import load_trained_model

    folder = make_tiny_bert(tmp_path / "bert", num_labels=2)

    def planted(*args, **kwargs):
        raise KeyError("planted bug")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", planted)
    with pytest.raises(KeyError, match="planted bug"):
        load_trained_model(AutoModelForSequenceClassification, str(folder))
