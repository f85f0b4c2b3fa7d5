"""Reliability promises, each shown by subprocess runs on the paths users take: no silent wrong result (a rerun
with other settings, one class, no tokenizer, a missing task head), nothing good lost (failed saves, damaged
checkpoints, two runs at once, Ctrl-C), one clear line and exit code 2 for every mistake, on `python recipes/...`,
`hfopt launch` and `accelerate launch`, and no code execution from model folders."""

import json
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from hfopt.errors import InputError
from tests.testing_utils import (
    ROOT,
    fault_env,
    kill_after_checkpoint,
    one_error_line,
    read_json,
    recipe_env,
    run_hfopt,
    run_recipe,
    tiny_bert_args,
    train_losses,
    write_csv,
)

pytestmark = pytest.mark.slow


def bert_args(tiny_bert, easy_task, out, *extra):
    return [
        "--model_name_or_path",
        tiny_bert,
        "--train_file",
        easy_task["train"],
        "--validation_file",
        easy_task["validation"],
        "--output_dir",
        out,
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--eval_strategy",
        "no",
        *extra,
    ]


def snapshot(folder):
    """{relative path: bytes} of every file in a folder."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".hfopt.lock"
    }


# --- resume: only from a checkpoint that loads, only into the same configuration -----------------------------


def test_killed_run_with_a_damaged_checkpoint_ends_like_an_uninterrupted_run(tiny_bert, easy_task, tmp_path):
    steps = [
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "120",
        "--save_strategy",
        "steps",
        "--save_steps",
        "30",
        "--save_total_limit",
        "3",
    ]
    run_recipe("finetune_bert", bert_args(tiny_bert, easy_task, tmp_path / "reference", *steps))
    reference = read_json(tmp_path / "reference" / "all_results.json")

    out = tmp_path / "interrupted"
    args = bert_args(tiny_bert, easy_task, out, *steps)
    kill_after_checkpoint("finetune_bert", args, out / "checkpoint-60")
    complete = sorted(
        int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()
    )
    assert complete[0] < complete[-1] < 120
    newest = out / f"checkpoint-{complete[-1]}" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated weights
    resumed = run_recipe("finetune_bert", args)
    assert f"Skipping checkpoint {out}/checkpoint-{complete[-1]}: model.safetensors cannot be read" in resumed.stderr
    assert f"Resuming from {out}/checkpoint-{complete[-2]}" in resumed.stderr
    final = read_json(out / "all_results.json")
    for key in ("eval_loss", "eval_accuracy"):
        assert final[key] == pytest.approx(reference[key], rel=1e-4), key


def test_a_rerun_with_other_settings_touches_nothing_and_an_unchanged_one_is_complete(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    train = tmp_path / "train_copy.csv"  # a copy whose content changes under the same name at the end
    shutil.copy(easy_task["train"], train)
    args = tiny_bert_args(tiny_bert, {**easy_task, "train": train}, out, "--num_train_epochs", "1")
    run_recipe("finetune_bert", args)
    before = snapshot(out)
    for change in (
        ["--learning_rate", "3e-4", "--seed", "7"],
        ["--label_column_name", "sentence"],
        ["--train_file", easy_task["validation"]],
    ):
        result = run_recipe("finetune_bert", [*args, *change], check=False)
        line = one_error_line(result)
        assert result.returncode == 2 and "holds a run with other settings" in line
        assert "--start_fresh true" in line and "another --output_dir" in line
        if change[0] == "--learning_rate":
            assert "learning_rate: 0.002 → 0.0003" in line
        assert snapshot(out) == before
    again = run_recipe("finetune_bert", [*args, "--logging_steps", "1"])  # logging is safe to change
    assert "Already complete" in again.stdout and snapshot(out) == before
    # the data changed under the same file name
    train.write_text(train.read_text() + "a new sentence,1\n")
    result = run_recipe("finetune_bert", args, check=False)
    assert result.returncode == 2 and "train_copy.csv: its content changed" in one_error_line(result)
    assert snapshot(out) == before


def test_a_recipe_never_writes_into_or_over_what_it_reads(tiny_bert, easy_task, tmp_path):
    """One case end to end (an output_dir that does not exist yet, inside the model folder: no file may be written
    before the refusal); the others through the check that refuses them in the recipe (`plan_output_dir` calls
    `check_apart` with these inputs, before its lock or record; the recipe prints the message after "error: ")."""
    from hfopt.run.output_dir import READ_BY_RECIPES, check_apart

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    data = tmp_path / "data"
    data.mkdir()
    train = shutil.copy(easy_task["train"], data / "train.csv")
    before = snapshot(tmp_path)
    args = tiny_bert_args(model, {**easy_task, "train": train}, model / "run", "--num_train_epochs", "1")
    result = run_recipe("finetune_bert", args, check=False)
    line = one_error_line(result)
    assert result.returncode == 2 and "lies inside --model_name_or_path" in line
    assert "choose an --output_dir apart from it" in line
    assert snapshot(tmp_path) == before
    config = {
        "model_name_or_path": str(model),
        "train_file": str(train),
        "validation_file": str(easy_task["validation"]),
    }
    for out, words in (
        (model, "is --model_name_or_path"),  # fine-tuning "in place" would replace the model it starts from
        (data, "contains --train_file"),
    ):
        with pytest.raises(InputError) as refused:
            check_apart(str(out), {f"--{key}": config.get(key) for key in READ_BY_RECIPES})
        assert words in str(refused.value) and "choose an --output_dir apart from it" in str(refused.value)
        assert snapshot(tmp_path) == before


def test_a_run_that_fails_before_its_first_step_writes_no_record(tiny_bert, tmp_path):
    train = write_csv(tmp_path / "t.csv", [("a b", 0), ("c d", 1), ("e f", 2)] * 5)
    out = tmp_path / "out"
    result = run_recipe(
        "finetune_bert",
        ["--model_name_or_path", tiny_bert, "--train_file", train, "--num_labels", "2", "--output_dir", out],
        check=False,
    )
    assert result.returncode == 2
    assert not (out / "config.yaml").exists() and not (out / "run_info.json").exists()


# --- nothing good is lost ------------------------------------------------------------------------------------


def test_a_final_save_that_fails_half_way_leaves_the_old_model_as_it_was(tiny_bert, easy_task, tmp_path):
    """The model already in output_dir is a copy of the starting one: --start_fresh trains over a model folder
    whatever put it there, and the final save that fails is the same."""
    out = tmp_path / "out"
    shutil.copytree(tiny_bert, out)
    args = tiny_bert_args(tiny_bert, easy_task, out, "--num_train_epochs", "1", "--save_strategy", "no")
    model_before = (out / "model.safetensors").read_bytes()
    result = run_recipe(
        "finetune_bert",
        [*args, "--start_fresh", "true", "--seed", "3"],
        check=False,
        env=fault_env(tmp_path / "faults", ".final-model.tmp"),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stopped: no space left on the device" in result.stderr and "the model already there" in result.stderr
    assert (out / "model.safetensors").read_bytes() == model_before
    assert not (out / ".final-model.tmp").exists()


def test_a_checkpoint_save_that_fails_removes_its_partial_folder_and_says_how_much_space(
    tiny_bert, easy_task, tmp_path
):
    out = tmp_path / "out"
    result = run_recipe(
        "finetune_bert",
        bert_args(tiny_bert, easy_task, out, "--max_steps", "20", "--save_strategy", "steps", "--save_steps", "10"),
        check=False,
        env=fault_env(tmp_path / "faults", "checkpoint-20"),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("stopped: "))
    assert "no space left" in line and "the partial checkpoint-20 was removed" in line and "MB are free" in line
    assert "a checkpoint needs about" in line
    assert not (out / "checkpoint-20").exists() and (out / "checkpoint-10" / "trainer_state.json").exists()


def test_two_runs_on_one_output_dir_and_a_killed_run_leaves_no_stale_lock(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    args = bert_args(
        tiny_bert,
        easy_task,
        out,
        "--max_steps",
        "100000",
        "--per_device_train_batch_size",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "20",
    )
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "recipes" / "finetune_bert.py"), *map(str, args)],
        env=recipe_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint-20" / "trainer_state.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        second = run_recipe("finetune_bert", args, check=False)
        assert second.returncode == 2 and "is in use by another run (pid" in one_error_line(second)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = run_recipe("finetune_bert", [*args, "--start_fresh", "true", "--max_steps", "30"])
    assert third.returncode == 0 and read_json(out / "trainer_state.json")["global_step"] == 30


def test_ctrl_c_says_where_the_last_checkpoint_is(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    args = bert_args(
        tiny_bert,
        easy_task,
        out,
        "--max_steps",
        "400",
        "--per_device_train_batch_size",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "20",
    )
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "recipes" / "finetune_bert.py"), *map(str, args)],
        env=recipe_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default, as in a terminal: a suite started in the background (`pytest &`) runs with SIGINT
        # ignored, which its children inherit and which Python then leaves ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    # any complete checkpoint: an older one may already be rotated away when the poll looks
    while not list(out.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    line = next(line for line in stderr.splitlines() if line.startswith("stopped: "))
    assert "interrupted: the last complete checkpoint is" in line and "checkpoint-" in line
    assert "run the same command again to resume" in line


# --- one clear line, exit code 2 -----------------------------------------------------------------------------


def bad_inputs(root, tiny_bert, easy):
    """(name, recipe, arguments, words the message must hold)."""
    latin1 = root / "latin1.csv"
    latin1.write_bytes("sentence,label\nok,1\ncaf\xe9,0\n".encode("latin-1"))
    empty_text = write_csv(root / "empty_text.csv", [("fine", 1), ("", 0), ("ok", 1)])
    header_only = write_csv(root / "header_only.csv", [])
    stars = write_csv(root / "stars.csv", [("good", 1)] * 4, header=("review", "stars"))
    three = write_csv(root / "three.csv", [("a", 0), ("b", 1), ("c", 2)])
    one_class = write_csv(root / "one_class.csv", [("good", 1)] * 20)
    numbers = write_csv(root / "numbers.csv", [(i, i % 2) for i in range(20)])
    one_row = write_csv(root / "one_row.csv", [("good", 1)])
    (root / "unknown.yaml").write_text(yaml.safe_dump({"learning_rate": 1e-4, "num_epochs": 3}))
    (root / "typed.yaml").write_text(yaml.safe_dump({"num_train_epochs": "three"}))
    (root / "notes.xlsx").write_text("x")
    (root / "empty.jsonl").write_text("")
    (root / "one.json").write_text(json.dumps({"sentence": "good", "label": 1}))
    (root / "blank.txt").write_text("\n\n\n")
    (root / "folder.csv").mkdir()
    no_tokenizer = root / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, no_tokenizer / name)
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    ).save_pretrained(root / "base_model")
    shutil.copy(tiny_bert / "tokenizer.json", root / "base_model")
    shutil.copy(tiny_bert / "tokenizer_config.json", root / "base_model")
    bad_accelerate = root / "bad_accelerate.yaml"
    bad_accelerate.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: [oops\n")
    bf17 = root / "bf17.yaml"
    bf17.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf17\n")
    data = ["--model_name_or_path", tiny_bert, "--output_dir", root / "out"]
    train = [*data, "--train_file", easy["train"], "--validation_file", easy["validation"]]
    lm = [
        "--model_type",
        "gpt2",
        "--config_overrides",
        "n_positions=64,n_layer=1,n_embd=16,n_head=2",
        "--output_dir",
        root / "o",
    ]
    return [
        ("missing file", "finetune_bert", [*data, "--train_file", root / "nope.csv"], ["nope.csv does not exist"]),
        (
            "unsupported type",
            "finetune_bert",
            [*data, "--train_file", root / "notes.xlsx"],
            ["unsupported type '.xlsx'", ".parquet"],
        ),
        (
            "folder as file",
            "finetune_bert",
            [*data, "--train_file", root / "folder.csv"],
            ["train_file", "folder.csv is a folder, not a file"],
        ),
        (
            "zero-byte jsonl",
            "finetune_bert",
            [*data, "--train_file", root / "empty.jsonl"],
            ["train_file", "empty.jsonl is empty"],
        ),
        (
            "one JSON object",
            "finetune_bert",
            [*data, "--train_file", root / "one.json"],
            ["train_file", "one.json holds one JSON object", "not rows"],
        ),
        (
            "one row, no validation file",
            "finetune_bert",
            [*data, "--train_file", one_row],
            ["train_file", "one_row.csv has 1 row(s)", "give --validation_file"],
        ),
        (
            "numbers as text",
            "finetune_bert",
            [*data, "--train_file", numbers, "--validation_file", numbers],
            ["train_file", "numbers.csv: column 'sentence' holds int64 values, not text"],
        ),
        ("misnamed column", "finetune_bert", [*data, "--train_file", stars], ["no text column", "review, stars"]),
        (
            "label column",
            "finetune_bert",
            [*data, "--train_file", stars, "--text_column_names", "review"],
            ["no label column", "review, stars"],
        ),
        (
            "labels outside num_labels",
            "finetune_bert",
            [*data, "--train_file", three, "--num_labels", "2"],
            ["label 2 at row index", "outside the 2 classes"],
        ),
        (
            "one class",
            "finetune_bert",
            [*data, "--train_file", one_class, "--validation_file", one_class],
            ["train_file", "one_class.csv: every training row has label 1", "shuffle the file"],
        ),
        (
            "max samples of zero",
            "finetune_bert",
            [*train, "--max_train_samples", "0"],
            ["max_train_samples must be ≥ 1"],
        ),
        (
            "empty split",
            "finetune_bert",
            [*data, "--train_file", easy["train"], "--validation_file", header_only],
            ["header_only.csv is empty"],
        ),
        (
            "empty text",
            "finetune_bert",
            [*data, "--train_file", empty_text, "--validation_file", easy["validation"]],
            ["1 row(s) with empty 'sentence'", "row index 1"],
        ),
        ("non-UTF-8", "finetune_bert", [*data, "--train_file", latin1], ["not UTF-8", "line 3"]),
        (
            "unknown YAML key",
            "finetune_bert",
            ["--config", root / "unknown.yaml"],
            ["unknown key 'num_epochs'", "unknown.yaml", "num_train_epochs"],
        ),
        (
            "YAML type error",
            "finetune_bert",
            ["--config", root / "typed.yaml"],
            ["typed.yaml", "num_train_epochs", "three"],
        ),
        ("fp16 without CUDA", "finetune_bert", [*train, "--fp16", "true"], ["fp16", "needs a CUDA GPU"]),
        (
            "unknown metric_for_best_model",
            "finetune_bert",
            [*train, "--metric_for_best_model", "f2"],
            ["metric_for_best_model 'f2' is not a metric finetune_bert produces", "accuracy, f1, loss, mcc"],
        ),
        ("learning rate", "finetune_bert", [*train, "--learning_rate", "-1"], ["learning_rate must be > 0"]),
        (
            "frozen layers beyond the model",
            "finetune_bert",
            [*train, "--num_frozen_layers", "5"],
            ["num_frozen_layers is 5 but the model has 2 blocks"],
        ),
        (
            "missing tokenizer",
            "finetune_bert",
            ["--model_name_or_path", no_tokenizer, *train[2:]],
            ["no_tokenizer has no tokenizer files", "--tokenizer_name"],
        ),
        (
            "missing model folder",
            "finetune_bert",
            ["--model_name_or_path", root / "no_model", *train[2:]],
            ["no_model does not exist"],
        ),
        (
            "accelerate config",
            "hfopt launch",
            ["--config_file", bad_accelerate, "recipes/finetune_bert.py"],
            ["accelerate config", "does not parse"],
        ),
        (
            "accelerate config value",
            "hfopt launch",
            ["--config_file", bf17, "recipes/finetune_bert.py"],
            ["mixed_precision 'bf17' is not one of no, fp16, bf16, fp8"],
        ),
        (
            "block_size beyond context",
            "finetune_gpt",
            [*lm, "--train_file", root / "t.txt", "--block_size", "128"],
            ["block_size 128", "context of 64"],
        ),
        (
            "block_size 1",
            "finetune_gpt",
            [*lm, "--train_file", root / "t.txt", "--block_size", "1"],
            ["block_size must be ≥ 2"],
        ),
        (
            "blank text file",
            "finetune_gpt",
            [*lm, "--train_file", root / "blank.txt"],
            ["train_file", "blank.txt is empty (only blank lines)"],
        ),
        (
            "translation language",
            "finetune_translation",
            [
                "--train_file",
                root / "pairs.jsonl",
                "--source_lang",
                "en",
                "--target_lang",
                "fr",
                "--model_type",
                "marian",
                "--output_dir",
                root / "o",
            ],
            ["no 'fr' text", "languages found: en, de"],
        ),
        (
            "teacher without a trained head",
            "distill_bert",
            ["--teacher_model_name_or_path", root / "base_model", *train[2:]],
            ["teacher", "base_model has no trained task head", "BertModel"],
        ),
        (
            "temperature",
            "distill_bert",
            ["--teacher_model_name_or_path", tiny_bert, *train[2:], "--temperature", "nan"],
            ["temperature must be a finite number > 0"],
        ),
        (
            "layer_map outside the teacher",
            "distill_bert",
            [
                "--teacher_model_name_or_path",
                tiny_bert,
                *train[2:],
                "--student_num_layers",
                "1",
                "--hidden_loss_weight",
                "1",
                "--layer_map",
                "3",
            ],
            ["layer_map entries are teacher blocks 1..2 (1-based)"],
        ),
    ]


@pytest.fixture(scope="module")
def bad_input_cases(tiny_bert, easy_task, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "t.txt").write_text("some text for a language model\n" * 50)
    (root / "pairs.jsonl").write_text(
        "\n".join(json.dumps({"translation": {"en": "hi", "de": "hallo"}}) for _ in range(20)) + "\n"
    )
    return {name: case for name, *case in bad_inputs(root, tiny_bert, easy_task)}


CASES = [
    "missing file",
    "unsupported type",
    "folder as file",
    "zero-byte jsonl",
    "one JSON object",
    "one row, no validation file",
    "numbers as text",
    "misnamed column",
    "label column",
    "labels outside num_labels",
    "one class",
    "max samples of zero",
    "empty split",
    "empty text",
    "non-UTF-8",
    "unknown YAML key",
    "YAML type error",
    "fp16 without CUDA",
    "unknown metric_for_best_model",
    "learning rate",
    "frozen layers beyond the model",
    "missing tokenizer",
    "missing model folder",
    "accelerate config",
    "accelerate config value",
    "block_size beyond context",
    "block_size 1",
    "blank text file",
    "translation language",
    "teacher without a trained head",
    "temperature",
    "layer_map outside the teacher",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_with_one_clear_line(bad_input_cases, name):
    recipe, args, words = bad_input_cases[name]
    if recipe == "hfopt launch":
        result = run_hfopt("launch", *args)
    else:
        result = run_recipe(recipe, args, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_error_line(result)
    for word in words:
        assert word in line, line


def test_the_launch_paths_print_the_recipes_line(bad_input_cases):
    """`hfopt launch` passes the recipe's exit code 2 through with no launcher traceback; `accelerate launch`
    prints the same line (its own traceback follows; see the README) and exits non-zero. With one process
    `hfopt launch` runs accelerate's own `launch_command` on the same parsed arguments and environment (the same
    child, whose failure it catches where `accelerate launch` lets it end in a traceback), so the plain
    `accelerate launch` is run with two processes only."""
    _, args, words = bad_input_cases["one class"]
    two_processes = ["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"]
    for launcher in (["--num_processes", "1"], two_processes):
        result = run_recipe("finetune_bert", args, launcher=launcher, launch_with="hfopt", check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "one_class.csv: every training row has label 1" in one_error_line(result)
    plain = run_recipe("finetune_bert", args, launcher=two_processes, check=False)
    assert plain.returncode != 0
    # one line, from one process (accelerate's own traceback then quotes the tail of the child's stderr)
    assert len({line for line in plain.stderr.splitlines() if line.startswith("error: ")}) == 1


def test_compress_needs_the_task_head_and_an_eval_file_that_fits(easy_task, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.testing_utils import WORDS, make_bert_tokenizer

    folder = tmp_path / "lm"
    tokenizer = make_bert_tokenizer(WORDS, folder)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64)
    ).save_pretrained(folder)
    as_classifier = run_hfopt(
        "compress",
        folder,
        "--task",
        "classification",
        "--eval_file",
        easy_task["validation"],
        "--output_dir",
        tmp_path / "o",
    )
    assert as_classifier.returncode == 2 and "has no trained task head" in one_error_line(as_classifier)
    wrong_file = run_hfopt("compress", folder, "--eval_file", easy_task["validation"], "--output_dir", tmp_path / "o")
    line = one_error_line(wrong_file)
    assert wrong_file.returncode == 2 and "eval_file does not fit the causal_lm model" in line
    assert not (tmp_path / "o").exists()


# --- security -------------------------------------------------------------------------------------------------


class Planted:
    """Unpickling this writes a marker file: proof that code from the model folder ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_in_a_model_folder_is_not_executed(tiny_bert, easy_task, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    marker = tmp_path / "executed"
    with open(folder / "pytorch_model.bin", "wb") as fh:  # next to the real model.safetensors
        pickle.dump({"bert.embeddings.word_embeddings.weight": Planted(str(marker))}, fh)
    run_recipe(
        "finetune_bert",
        [
            "--model_name_or_path",
            folder,
            "--train_file",
            easy_task["train"],
            "--output_dir",
            tmp_path / "out",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
        ],
    )
    assert not marker.exists()
    (folder / "model.safetensors").unlink()  # now only the pickle is there
    result = run_recipe(
        "finetune_bert",
        [
            "--model_name_or_path",
            folder,
            "--train_file",
            easy_task["train"],
            "--output_dir",
            tmp_path / "out2",
            "--max_steps",
            "2",
        ],
        check=False,
    )
    assert result.returncode == 2 and not marker.exists()
    line = one_error_line(result)
    assert "could not be loaded" in line and "which is refused" in line and "weights_only=False" not in result.stderr


def test_hfopt_never_unpickles_without_weights_only():
    sources = [p for p in (ROOT / "hfopt").rglob("*.py")] + [p for p in (ROOT / "recipes").rglob("*.py")]
    for path in sources:
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
        assert "pickle.load" not in text, path


def test_remote_code_is_off_unless_asked(tiny_bert, easy_task, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert, folder)
    marker = tmp_path / "remote_code_ran"
    (folder / "custom_modeling.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom transformers import BertForSequenceClassification as Custom\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "custom_modeling.Custom"}
    (folder / "config.json").write_text(json.dumps(config))
    run_recipe(
        "finetune_bert",
        [
            "--model_name_or_path",
            folder,
            "--train_file",
            easy_task["train"],
            "--output_dir",
            tmp_path / "out",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
        ],
        check=False,
    )
    assert not marker.exists()


def test_one_and_two_processes_give_the_same_loss_curve(tiny_bert, easy_task, tmp_path):
    common = ["--max_steps", "12", "--dropout", "0", "--save_strategy", "no", "--do_eval", "false"]
    run_recipe(
        "finetune_bert",
        bert_args(tiny_bert, easy_task, tmp_path / "one", "--per_device_train_batch_size", "16", *common),
    )
    run_recipe(
        "finetune_bert",
        bert_args(tiny_bert, easy_task, tmp_path / "two", "--per_device_train_batch_size", "8", *common),
        launcher=["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"],
    )
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(one) == 12 and one == pytest.approx(two, abs=1e-5)


def test_keep_checkpoints_false_leaves_the_model_and_a_rerun_is_still_complete(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    args = tiny_bert_args(tiny_bert, easy_task, out, "--num_train_epochs", "2", "--keep_checkpoints", "false")
    first = run_recipe("finetune_bert", args)
    assert not list(out.glob("checkpoint-*")) and (out / "model.safetensors").is_file()
    assert read_json(out / "run_info.json")["status"] == "complete"
    assert f"On disk: {out} holds" in first.stdout and "no checkpoints" in first.stdout
    before = snapshot(out)
    again = run_recipe("finetune_bert", args)
    assert "Already complete" in again.stdout and "'loss'" not in again.stdout  # reported, not retrained
    assert snapshot(out) == before
    kept = tmp_path / "kept"
    run = run_recipe("finetune_bert", tiny_bert_args(tiny_bert, easy_task, kept, "--num_train_epochs", "2"))
    assert len(list(kept.glob("checkpoint-*"))) == 2 and "2 checkpoint(s) with optimizer state" in run.stdout
