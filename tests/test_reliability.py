"""Reliability promises, each shown by subprocess runs of the recipes: resume after SIGKILL ends where an
uninterrupted run ends, partial checkpoints are skipped, batch/accumulation/process-count invariance, one clear
line for each kind of bad input, and no code execution from model folders."""

import json
import pickle
import shutil
import sys

import pytest
import yaml

from conftest import ROOT, kill_after_checkpoint, read_json, run_recipe, train_losses, write_csv

pytestmark = pytest.mark.slow


def bert_args(tiny_bert, easy_task, out, *extra):
    return ["--model_name_or_path", tiny_bert, "--train_file", easy_task["train"], "--validation_file",
            easy_task["validation"], "--output_dir", out, "--learning_rate", "1e-3", "--logging_steps", "1",
            "--disable_tqdm", "true", "--eval_strategy", "no", *extra]


def test_killed_run_with_a_cut_off_checkpoint_ends_like_an_uninterrupted_run(tiny_bert, easy_task, tmp_path):
    steps = ["--per_device_train_batch_size", "4", "--max_steps", "120", "--save_strategy", "steps",
             "--save_steps", "30", "--save_total_limit", "3"]
    run_recipe("finetune_bert", bert_args(tiny_bert, easy_task, tmp_path / "reference", *steps))
    reference = read_json(tmp_path / "reference" / "all_results.json")

    out = tmp_path / "interrupted"
    args = bert_args(tiny_bert, easy_task, out, *steps)
    kill_after_checkpoint("finetune_bert", args, out / "checkpoint-60")
    complete = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    assert complete[0] < complete[-1] < 120
    (out / f"checkpoint-{complete[-1]}" / "trainer_state.json").unlink()  # as if killed while saving it
    resumed = run_recipe("finetune_bert", args)
    assert f"Skipping incomplete checkpoint {out}/checkpoint-{complete[-1]}" in resumed.stderr
    assert f"Resuming from {out}/checkpoint-{complete[-2]}" in resumed.stderr
    final = read_json(out / "all_results.json")
    for key in ("eval_loss", "eval_accuracy"):
        assert final[key] == pytest.approx(reference[key], rel=1e-4), key


def test_killed_gpt_run_ends_like_an_uninterrupted_run(tmp_path):
    from test_finetune_gpt import TINY_GPT, story_lines

    (tmp_path / "train.txt").write_text("\n".join(story_lines(400, 1)) + "\n")
    def args(out):
        return ["--train_file", tmp_path / "train.txt", "--output_dir", out, *TINY_GPT, "--max_steps", "60",
                "--save_strategy", "steps", "--save_steps", "20", "--eval_before_training", "false",
                "--per_device_train_batch_size", "2"]
    run_recipe("finetune_gpt", args(tmp_path / "reference"))
    kill_after_checkpoint("finetune_gpt", args(tmp_path / "interrupted"), tmp_path / "interrupted" / "checkpoint-20")
    run_recipe("finetune_gpt", args(tmp_path / "interrupted"))
    reference, final = (read_json(tmp_path / d / "all_results.json") for d in ("reference", "interrupted"))
    assert final["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-4)


def test_batch_8x1_and_2x4_give_the_same_loss_curve(tiny_bert, easy_task, tmp_path):
    curves = []
    for batch, accumulation in (("8", "1"), ("2", "4")):
        out = tmp_path / f"{batch}x{accumulation}"
        run_recipe("finetune_bert", bert_args(tiny_bert, easy_task, out, "--per_device_train_batch_size", batch,
                                              "--gradient_accumulation_steps", accumulation, "--max_steps", "12",
                                              "--dropout", "0", "--save_strategy", "no", "--do_eval", "false"))
        curves.append(train_losses(out))
    assert len(curves[0]) == 12 and curves[0] == pytest.approx(curves[1], abs=1e-5)


def test_one_and_two_processes_give_the_same_loss_curve(tiny_bert, easy_task, tmp_path):
    common = ["--max_steps", "12", "--dropout", "0", "--save_strategy", "no", "--do_eval", "false"]
    run_recipe("finetune_bert", bert_args(tiny_bert, easy_task, tmp_path / "one", "--per_device_train_batch_size",
                                          "16", *common))
    run_recipe("finetune_bert", bert_args(tiny_bert, easy_task, tmp_path / "two", "--per_device_train_batch_size",
                                          "8", *common),
               launcher=["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"])
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(one) == 12 and one == pytest.approx(two, abs=1e-5)


# --- bad input: one line, exit code 2, no traceback ---------------------------------------------------------

def bad_inputs(root, tiny_bert, easy):
    """(name, recipe, arguments, words the message must hold)."""
    latin1 = root / "latin1.csv"
    latin1.write_bytes("sentence,label\nok,1\ncaf\xe9,0\n".encode("latin-1"))
    empty_text = write_csv(root / "empty_text.csv", [("fine", 1), ("", 0), ("ok", 1)])
    header_only = write_csv(root / "header_only.csv", [])
    stars = write_csv(root / "stars.csv", [("good", 1)] * 4, header=("review", "stars"))
    three = write_csv(root / "three.csv", [("a", 0), ("b", 1), ("c", 2)])
    (root / "unknown.yaml").write_text(yaml.safe_dump({"learning_rate": 1e-4, "num_epochs": 3}))
    (root / "typed.yaml").write_text(yaml.safe_dump({"num_train_epochs": "three"}))
    (root / "notes.parquet").write_text("x")
    bad_accelerate = root / "bad_accelerate.yaml"
    bad_accelerate.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: [oops\n")
    data = ["--model_name_or_path", tiny_bert, "--output_dir", root / "out"]
    return [
        ("missing file", "finetune_bert", [*data, "--train_file", root / "nope.csv"], ["nope.csv does not exist"]),
        ("unsupported type", "finetune_bert", [*data, "--train_file", root / "notes.parquet"],
         ["unsupported type '.parquet'"]),
        ("misnamed column", "finetune_bert", [*data, "--train_file", stars], ["no text column", "review, stars"]),
        ("label column", "finetune_bert", [*data, "--train_file", stars, "--text_column_names", "review"],
         ["no label column", "review, stars"]),
        ("labels outside num_labels", "finetune_bert", [*data, "--train_file", three, "--num_labels", "2"],
         ["label 2 at row index", "outside the 2 classes"]),
        ("empty split", "finetune_bert", [*data, "--train_file", easy["train"], "--validation_file", header_only],
         ["header_only.csv is empty"]),
        ("empty text", "finetune_bert", [*data, "--train_file", empty_text, "--validation_file", easy["validation"]],
         ["1 row(s) with empty 'sentence'", "row index 1"]),
        ("non-UTF-8", "finetune_bert", [*data, "--train_file", latin1], ["not UTF-8", "line 3"]),
        ("unknown YAML key", "finetune_bert", ["--config", root / "unknown.yaml"],
         ["unknown key 'num_epochs'", "unknown.yaml", "num_train_epochs"]),
        ("YAML type error", "finetune_bert", ["--config", root / "typed.yaml"], ["typed.yaml", "num_train_epochs", "three"]),
        ("fp16 without CUDA", "finetune_bert", [*data, "--train_file", easy["train"], "--fp16", "true"],
         ["fp16", "needs a CUDA GPU"]),
        ("accelerate config", "hfopt launch", ["--config_file", bad_accelerate, "recipes/finetune_bert.py"],
         ["accelerate config", "does not parse"]),
        ("missing model folder", "finetune_bert", ["--model_name_or_path", root / "no_model", "--train_file",
                                                    easy["train"]], ["no_model does not exist"]),
        ("block_size beyond context", "finetune_gpt", ["--model_type", "gpt2", "--config_overrides", "n_positions=64",
                                                       "--train_file", root / "t.txt", "--block_size", "128",
                                                       "--output_dir", root / "o"], ["block_size 128", "context of 64"]),
        ("translation language", "finetune_translation", ["--train_file", root / "pairs.jsonl", "--source_lang", "en",
                                                          "--target_lang", "fr", "--model_type", "marian",
                                                          "--output_dir", root / "o"],
         ["no 'fr' text", "languages found: en, de"]),
    ]


@pytest.fixture(scope="module")
def bad_input_cases(tiny_bert, easy_task, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "t.txt").write_text("some text for a language model\n" * 50)
    (root / "pairs.jsonl").write_text("\n".join(json.dumps({"translation": {"en": "hi", "de": "hallo"}})
                                                for _ in range(20)) + "\n")
    return {name: case for name, *case in bad_inputs(root, tiny_bert, easy_task)}


CASES = ["missing file", "unsupported type", "misnamed column", "label column", "labels outside num_labels",
         "empty split", "empty text", "non-UTF-8", "unknown YAML key", "YAML type error", "fp16 without CUDA",
         "accelerate config", "missing model folder", "block_size beyond context", "translation language"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_with_one_clear_line(bad_input_cases, name):
    recipe, args, words = bad_input_cases[name]
    if recipe == "hfopt launch":
        import subprocess

        result = subprocess.run([sys.executable, "-m", "hfopt.cli", "launch", *map(str, args)], capture_output=True,
                                text=True, cwd=ROOT)
    else:
        result = run_recipe(recipe, args, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr
    for word in words:
        assert word in error_lines[0], error_lines[0]


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
    run_recipe("finetune_bert", ["--model_name_or_path", folder, "--train_file", easy_task["train"],
                                 "--output_dir", tmp_path / "out", "--max_steps", "2", "--save_strategy", "no"])
    assert not marker.exists()
    (folder / "model.safetensors").unlink()  # now only the pickle is there
    result = run_recipe("finetune_bert", ["--model_name_or_path", folder, "--train_file", easy_task["train"],
                                          "--output_dir", tmp_path / "out2", "--max_steps", "2"], check=False)
    assert result.returncode != 0 and not marker.exists()


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
    (folder / "custom_modeling.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                               "from transformers import BertForSequenceClassification as Custom\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "custom_modeling.Custom"}
    (folder / "config.json").write_text(json.dumps(config))
    run_recipe("finetune_bert", ["--model_name_or_path", folder, "--train_file", easy_task["train"],
                                 "--output_dir", tmp_path / "out", "--max_steps", "2", "--save_strategy", "no"],
               check=False)
    assert not marker.exists()
