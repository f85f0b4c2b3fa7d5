"""`hfopt compress` / recipes/compress.py on a fine-tuned tiny model, and MiniLM on SST-2."""

import subprocess
import sys

import pytest
import torch

from tests.testing_utils import (
    ROOT,
    STAGE_FIELDS,
    WORDS,
    make_bert_tokenizer,
    make_tiny_bert,
    one_error_line,
    read_json,
    recipe_env,
    run_recipe,
)

pytestmark = pytest.mark.slow


def compress(*args, script=False):
    command = (
        [sys.executable, str(ROOT / "recipes" / "compress.py")]
        if script
        else [sys.executable, "-m", "hfopt.cli", "compress"]
    )
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=recipe_env())


def test_compress_writes_the_model_and_both_reports(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "compressed"
    result = compress(
        tiny_teacher,
        "--eval_file",
        easy_task["validation"],
        "--prune_heads",
        "0.25",
        "--prune_magnitude",
        "0.5",
        "--quantize",
        "dynamic_int8",
        "--quantize_embeddings",
        "--output_dir",
        out,
        "--latency_repeats",
        "3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(out / "compression_report.json")
    assert list(report["stages"]) == ["original", "prune_heads_0.25", "prune_magnitude_0.5", "quantize_dynamic_int8"]
    for stage in report["stages"].values():
        assert set(stage) == STAGE_FIELDS | {"accuracy", "f1", "delta_accuracy", "delta_f1"}
    stages = report["stages"]
    assert stages["prune_heads_0.25"]["parameters"] < stages["original"]["parameters"]
    assert stages["prune_magnitude_0.5"]["nonzero_parameters"] < stages["prune_heads_0.25"]["nonzero_parameters"]
    assert stages["quantize_dynamic_int8"]["size_reduction"] > 2
    assert stages["original"]["accuracy"] >= 0.9
    markdown = (out / "compression_report.md").read_text()
    assert all(name in markdown for name in stages) and "b16 p90 ms" in markdown
    kept = sorted(p.name for p in (out / "stages").iterdir())  # every stage, for a rerun to resume from
    assert kept == ["00_original", "01_prune_heads", "02_prune_magnitude", "03_quantize"]
    assert not (out / ".training").exists() and not list(out.glob(".*.new.*"))

    from transformers import AutoTokenizer

    from hfopt.compression import load_compressed

    model, tokenizer = load_compressed(out / "model"), AutoTokenizer.from_pretrained(out / "model")
    with torch.no_grad():
        logits = model(
            **tokenizer(["the day was sunny", "a sad cold evening"], return_tensors="pt", padding=True)
        ).logits
    assert logits.shape == (2, 2)


@pytest.mark.parametrize("method", ["fp16", "int8_weight_only"])
def test_the_recipe_is_the_same_command(tiny_teacher, easy_task, tmp_path, method):
    if method == "int8_weight_only":
        pytest.importorskip("torchao")
    result = compress(
        tiny_teacher,
        "--eval_file",
        easy_task["validation"],
        "--quantize",
        method,
        "--output_dir",
        tmp_path / "o",
        "--latency_repeats",
        "2",
        script=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(tmp_path / "o" / "compression_report.json")["stages"]
    assert list(stages) == ["original", f"quantize_{method}"]
    assert stages[f"quantize_{method}"]["size_reduction"] > 1.3
    assert stages[f"quantize_{method}"]["delta_accuracy"] >= -0.02


def test_gpt2_classifier_fine_tuned_then_structurally_pruned_and_quantized(easy_task, tmp_path):
    """A GPT-2 sequence classifier (fine-tuned with the BERT recipe) through heads → FFN → int8."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = make_bert_tokenizer(WORDS, tmp_path / "gpt2")
    torch.manual_seed(0)
    GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            num_labels=2,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=None,
        )
    ).save_pretrained(tmp_path / "gpt2")
    run_recipe(
        "finetune_bert",
        [
            "--model_name_or_path",
            tmp_path / "gpt2",
            "--train_file",
            easy_task["train"],
            "--validation_file",
            easy_task["validation"],
            "--output_dir",
            tmp_path / "ft",
            "--num_train_epochs",
            "3",
            "--learning_rate",
            "3e-3",
            "--save_strategy",
            "no",
        ],
    )
    out = tmp_path / "compressed"
    result = compress(
        tmp_path / "ft",
        "--eval_file",
        easy_task["validation"],
        "--prune_heads",
        "0.25",
        "--prune_ffn",
        "0.25",
        "--quantize",
        "dynamic_int8",
        "--output_dir",
        out,
        "--latency_repeats",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(out / "compression_report.json")["stages"]
    heads, ffn = stages["prune_heads_0.25"], stages["prune_ffn_0.25"]
    # 2 of the 8 heads (8 wide, hidden 32): 3 × (32 × 8 + 8) in c_attn and 8 × 32 in c_proj each;
    # then 32 of each layer's 128 feed-forward neurons: 32 + 1 in c_fc and 32 in c_proj each
    assert stages["original"]["parameters"] - heads["parameters"] == 2 * (3 * (32 * 8 + 8) + 8 * 32)
    assert heads["parameters"] - ffn["parameters"] == 2 * 32 * (32 + 1 + 32)
    assert stages["original"]["accuracy"] >= 0.9 and stages["quantize_dynamic_int8"]["delta_accuracy"] >= -0.05


@pytest.mark.parametrize(
    "args, words",
    [
        (["--prune_magnitude", "1.5"], "prune_magnitude must be in [0, 1), got 1.5"),
        (["--prune_heads", "-0.1"], "prune_heads must be in [0, 1), got -0.1"),
        (["--text_column_names", "review"], "has no column 'review'; columns found: sentence, label"),
    ],
)
def test_bad_amounts_fail_with_one_line(tiny_teacher, easy_task, tmp_path, args, words):
    result = compress(tiny_teacher, "--eval_file", easy_task["validation"], "--output_dir", tmp_path / "o", *args)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_augmentation_flags_parse_into_their_part(easy_task, tmp_path):
    """--augment_stages takes training stages (a list), the augment_* probabilities their own part."""
    from hfopt.commands.compress import parse
    from hfopt.pipeline.config import AugmentationSettings

    base = ["MODEL", "--output_dir", str(tmp_path / "o"), "--eval_file", str(easy_task["validation"]),
            "--train_file", str(easy_task["train"]), "--student_layers", "1", "--qat", "distill"]  # fmt: skip
    _, _, config = parse([*base, "--augment_mask_prob", "0.1", "--augment_stages", "student", "qat"])
    assert config.augment_stages == ["student", "qat"] and config.owners()["augment_stages"] is AugmentationSettings
    assert config.augments("student") and config.augments("qat")
    _, _, config = parse([*base, "--augment_mask_prob", "0.1", "--augment_stages", "qat"])
    assert not config.augments("student") and config.augments("qat")
    with pytest.raises(SystemExit):  # not a training stage: the parser's invalid choice
        parse([*base, "--augment_mask_prob", "0.1", "--augment_stages", "quantize"])


def test_vocabulary_pruning_from_the_training_file_then_int8(tiny_teacher, easy_task, tmp_path):
    """--prune_vocabulary keeps the embedding rows of the tokens the training file uses: three filler words that
    it never uses go (in the eval file they embed as [UNK], which the classifier ignores)."""
    from transformers import AutoTokenizer

    from hfopt.compression import load_compressed
    from tests.testing_utils import FILLER, easy_rows, write_csv

    unused = set(FILLER[:3])
    rows = [(text, label) for text, label in easy_rows(600, seed=1) if not unused & set(text.split())]
    train = write_csv(tmp_path / "train.csv", rows + [("zebra quokka", 0)])  # unknown words: nothing to keep
    out = tmp_path / "o"
    result = compress(
        tiny_teacher,
        *("--eval_file", easy_task["validation"], "--prune_vocabulary", train, "--quantize", "dynamic_int8"),
        *("--quantize_embeddings", "--output_dir", out, "--latency_repeats", "2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(out / "compression_report.json")
    stages = report["stages"]
    assert list(stages) == ["original", "prune_vocabulary", "quantize_dynamic_int8"]
    vocabulary = len(AutoTokenizer.from_pretrained(tiny_teacher))
    assert report["vocabulary"]["kept"] == vocabulary - 3 and report["chain"][0] == "prune_vocabulary"
    removed = (vocabulary - report["vocabulary"]["kept"]) * 32  # hidden size 32
    assert stages["prune_vocabulary"]["parameters"] == stages["original"]["parameters"] - removed
    assert stages["prune_vocabulary"]["accuracy"] == stages["original"]["accuracy"] >= 0.9
    model = load_compressed(out / "model")
    assert model.get_input_embeddings().embedding.num_embeddings == report["vocabulary"]["kept"]


def test_vocabulary_pruned_model_fine_tunes_again(tiny_teacher, easy_task, tmp_path):
    """A vocabulary-pruned classifier goes back into training with its tokenizer: the embedding keeps its kept
    rows (no resize to the tokenizer's size) and the accuracy holds."""

    pruned = tmp_path / "pruned"
    result = compress(
        tiny_teacher,
        *("--eval_file", easy_task["validation"], "--prune_vocabulary", easy_task["train"]),
        *("--output_dir", pruned, "--latency_repeats", "1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kept = read_json(pruned / "compression_report.json")["vocabulary"]["kept"]
    out = tmp_path / "tuned"
    run_recipe(
        "finetune_bert",
        [
            *("--model_name_or_path", pruned / "model", "--train_file", easy_task["train"]),
            *("--validation_file", easy_task["validation"], "--output_dir", out, "--num_train_epochs", "1"),
            *("--learning_rate", "1e-4", "--save_strategy", "no", "--disable_tqdm", "true"),
        ],
    )
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
    from transformers import AutoModelForSequenceClassification

    from hfopt.models import load_trained_model

    reloaded = load_trained_model(AutoModelForSequenceClassification, str(out))
    assert reloaded.get_input_embeddings().embedding.num_embeddings == kept


def test_compared_models_must_share_the_tokenizer(tiny_teacher, easy_task, tmp_path):
    other = tmp_path / "other"
    make_tiny_bert(other, words=[*WORDS, "extra", "words"])
    result = compress(
        tiny_teacher,
        *("--eval_file", easy_task["validation"], "--quantize", "fp16", "--compare", f"other={other}"),
        *("--output_dir", tmp_path / "o"),
    )
    assert result.returncode == 2 and "its tokenizer differs from" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.real_model
def test_minilm_sst2_int8(minilm_sst2, tmp_path):
    """MiniLM fine-tuned on SST-2 → dynamic int8 with int8 embeddings: dev accuracy within 1 point of fp32 and
    at least 3.5× smaller on disk. (Latency is measured by bench/compress_sst2.py, not asserted here.)"""
    out = tmp_path / "int8"
    result = compress(
        minilm_sst2["model"],
        "--eval_file",
        minilm_sst2["validation"],
        "--quantize",
        "dynamic_int8",
        "--quantize_embeddings",
        "--output_dir",
        out,
        "--latency_repeats",
        "5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(out / "compression_report.json")["stages"]
    original, int8 = stages["original"], stages["quantize_dynamic_int8"]
    print(
        f"MiniLM SST-2: fp32 {original['accuracy']:.4f}, int8 {int8['accuracy']:.4f}, "
        f"size ×{int8['size_reduction']:.2f}, speed-up ×{int8['speedup_b1']:.2f} (b1) ×{int8['speedup_b16']:.2f} (b16)"
    )
    assert abs(int8["delta_accuracy"]) <= 0.01
    assert int8["size_reduction"] >= 3.5


def _snapshot(folder):
    """Every file under folder with its bytes: equal snapshots mean nothing was written, changed or removed."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["equal", "inside", "contains", "symlink", "eval_file_inside"])
def test_output_dir_apart_from_what_compress_reads(tiny_bert, easy_task, tmp_path, where):
    """No compressed copy over its own input: an --output_dir that is, lies inside or contains the model folder
    (symlinks resolved), or holds the eval file, stops with one line before anything is read or written."""
    import shutil

    model = tmp_path / "run" / "model"
    shutil.copytree(tiny_bert, model)
    eval_file = easy_task["validation"]
    out = {
        "equal": model,
        "inside": model / "compressed",
        "contains": model.parent,  # the reported bug: OUT/model replaced by the compressed copy
        "symlink": tmp_path / "link",
        "eval_file_inside": tmp_path / "run",
    }[where]
    if where == "symlink":
        out.symlink_to(model, target_is_directory=True)
    if where == "eval_file_inside":
        eval_file = shutil.copy(eval_file, tmp_path / "run" / "dev.csv")
        model = tiny_bert
    before = _snapshot(tmp_path)
    result = compress(model, "--eval_file", eval_file, "--quantize", "fp16", "--output_dir", out)
    line = one_error_line(result)
    assert result.returncode == 2
    relation, name = {
        "equal": ("is", "model_dir"),
        "inside": ("lies inside", "model_dir"),
        "contains": ("contains", "model_dir"),
        "symlink": ("is", "model_dir"),
        "eval_file_inside": ("contains", "--eval_file"),
    }[where]
    assert line == (
        f"error: --output_dir {out} {relation} {name} {model if name == 'model_dir' else eval_file}, which this "
        "command reads; it would write into or over its own input: choose an --output_dir apart from it"
    )
    assert _snapshot(tmp_path) == before and not (model / "compressed").exists()


def test_a_compare_name_may_not_replace_a_stage(tiny_bert, easy_task, tmp_path):
    result = compress(
        tiny_bert,
        *("--eval_file", easy_task["validation"], "--quantize", "fp16"),
        *("--compare", f"quantize_fp16={tiny_bert}", "--output_dir", tmp_path / "o"),
    )
    assert result.returncode == 2 and "'quantize_fp16' already names a row of the report" in one_error_line(result)
    assert not (tmp_path / "o").exists()
    twice = compress(
        tiny_bert,
        *("--eval_file", easy_task["validation"], "--compare", f"a={tiny_bert}", "--compare", f"a={tiny_bert}"),
        *("--output_dir", tmp_path / "o"),
    )
    assert twice.returncode == 2 and "give each --compare its own NAME" in one_error_line(twice)


def test_a_rerun_into_the_same_output_dir_leaves_no_stale_onnx_stage(tiny_bert, easy_task, tmp_path):
    """OUT/onnx holds only the stages this report describes: an earlier run's ONNX stage goes."""
    out = tmp_path / "o"
    stale = out / "onnx" / "onnx_int8"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"an earlier run's export")
    (out / "notes.txt").write_text("mine")
    result = compress(tiny_bert, "--eval_file", easy_task["validation"], "--output_dir", out, "--latency_repeats", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert list(read_json(out / "compression_report.json")["stages"]) == ["original"]
