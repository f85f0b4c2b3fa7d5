"""`--qat int8` and `--share_layers N` in the recipes and `hfopt compress`, end to end on tiny models."""

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hfopt.compression import convert_qat, load_compressed
from tests.testing_utils import (
    TINY_GPT,
    TINY_MARIAN,
    make_tiny_bert,
    one_error_line,
    read_json,
    run_hfopt,
    run_recipe,
    story_lines,
    tiny_bert_args,
    toy_pairs,
)

pytestmark = pytest.mark.slow

SENTENCES = ["the day was sunny", "a sad cold evening", "we walked home and it felt warm"]


@pytest.fixture(scope="module")
def four_layer_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert4"), num_hidden_layers=4)


def logits(model, folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return model(**tokenizer(SENTENCES, return_tensors="pt", padding=True)).logits


def test_qat_run_writes_the_float_model_and_its_int8_model_for_the_report(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "qat"
    run_recipe("finetune_bert", tiny_bert_args(tiny_bert, easy_task, out, "--qat", "int8", "--save_strategy", "no"))
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
    float_model = AutoModelForSequenceClassification.from_pretrained(out).eval()  # the usual float model
    assert type(float_model.classifier) is torch.nn.Linear
    int8 = load_compressed(out / "int8")  # and its int8 conversion, with the tokenizer
    assert torch.equal(logits(int8, out / "int8"), logits(convert_qat(float_model), out))

    report = tmp_path / "report"
    result = run_hfopt(
        "compress",
        out,
        "--eval_file",
        easy_task["validation"],
        "--output_dir",
        report,
        "--quantize",
        "dynamic_int8",
        "--compare",
        f"qat_int8={out / 'int8'}",
        "--latency_repeats",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(report / "compression_report.json")["stages"]
    assert sorted(stages) == ["original", "qat_int8", "quantize_dynamic_int8"]
    ptq, qat = stages["quantize_dynamic_int8"], stages["qat_int8"]
    assert qat["accuracy"] >= 0.9 and qat["parameters"] == ptq["parameters"]
    assert qat["size_bytes"] == pytest.approx(ptq["size_bytes"], rel=0.02) and qat["size_reduction"] > 1.5


def test_qat_under_two_process_ddp_writes_one_int8_model(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "qat"
    run_recipe(
        "finetune_bert",
        tiny_bert_args(tiny_bert, easy_task, out, "--qat", "int8", "--save_strategy", "no", "--num_train_epochs", "2"),
        launcher=["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"],
    )
    assert read_json(out / "run_info.json")["distributed_type"] == "MULTI_CPU"
    float_model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert torch.equal(logits(load_compressed(out / "int8"), out), logits(convert_qat(float_model), out))
    assert not list(out.glob("int8*.tmp*")) and not list(out.glob(".*int8*"))


def test_shared_fine_tuning_trains_the_shared_model_and_it_reloads_shared(four_layer_bert, easy_task, tmp_path):
    from hfopt.architectures import architecture
    from hfopt.models import load_trained_model

    out = tmp_path / "shared"
    run_recipe("finetune_bert", tiny_bert_args(four_layer_bert, easy_task, out, "--share_layers", "2"))
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
    groups = read_json(out / "config.json")["hfopt_shared_layers"]
    assert sum(len(g) - 1 for g in groups) == 2  # 4 blocks, 2 sets of weights
    model = load_trained_model(AutoModelForSequenceClassification, str(out)).eval()
    blocks = [block for _, block in architecture(model).blocks()]
    assert len({id(b) for b in blocks}) == 2 and all(blocks[i] is blocks[g[0]] for g in groups for i in g)
    unshared = AutoModelForSequenceClassification.from_pretrained(four_layer_bert)
    block_size = sum(p.numel() for p in unshared.bert.encoder.layer[0].parameters())
    assert model.num_parameters() == unshared.num_parameters() - 2 * block_size
    saved = (out / "model.safetensors").stat().st_size
    assert saved < (four_layer_bert / "model.safetensors").stat().st_size - 1.8 * 4 * block_size

    # checkpoints hold the shared weights once as well, and the run's folder is a stage of `hfopt compress`
    later = {f"bert.encoder.layer.{i}." for g in groups for i in g[1:]}
    for checkpoint in [out, *out.glob("checkpoint-*")]:
        with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
            assert not [k for k in f.keys() if any(k.startswith(prefix) for prefix in later)], checkpoint
    report = tmp_path / "report"
    result = run_hfopt(
        "compress", out, "--eval_file", easy_task["validation"], "--output_dir", report, "--quantize",
        "dynamic_int8", "--latency_repeats", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(report / "compression_report.json")["stages"]
    assert stages["original"]["parameters"] == model.num_parameters()
    assert stages["quantize_dynamic_int8"]["accuracy"] >= 0.9
    reloaded = load_compressed(report / "model")
    assert reloaded.bert.encoder.layer[groups[0][0]] is reloaded.bert.encoder.layer[groups[0][1]]


def test_share_layers_as_a_compress_stage(tiny_teacher, easy_task, tmp_path):
    report = tmp_path / "report"
    result = run_hfopt(
        "compress", tiny_teacher, "--eval_file", easy_task["validation"], "--output_dir", report,
        "--share_layers", "1", "--share_layers_init", "central", "--latency_repeats", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stages = read_json(report / "compression_report.json")["stages"]
    assert list(stages) == ["original", "share_layers_1"]
    assert stages["share_layers_1"]["size_reduction"] > 1.3
    assert load_compressed(report / "model").config.hfopt_shared_layers == [[0, 1]]


def test_distillation_shares_the_student_not_the_teacher(tiny_teacher, easy_task, tmp_path):
    out = tmp_path / "student"
    run_recipe(
        "distill_bert",
        [
            "--teacher_model_name_or_path", tiny_teacher, "--train_file", easy_task["train"],
            "--validation_file", easy_task["validation"], "--output_dir", out, "--student_num_layers", "2",
            "--share_layers", "1", "--learning_rate", "2e-3", "--num_train_epochs", "3",
            "--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--save_strategy", "no",
        ],
    )  # fmt: skip
    assert read_json(out / "config.json")["hfopt_shared_layers"] == [[0, 1]]
    assert "hfopt_shared_layers" not in read_json(tiny_teacher / "config.json")
    report = read_json(out / "distillation_report.json")
    assert report["summary"]["parameter_ratio"] < 0.9 and report["summary"]["retention"] >= 0.9


def test_gpt2_trains_shared_and_quantization_aware(tmp_path):
    from transformers import AutoModelForCausalLM

    from hfopt.models import load_trained_model

    (tmp_path / "train.txt").write_text("\n".join(story_lines(600, 1)) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(story_lines(60, 2)) + "\n")
    out = tmp_path / "out"
    run_recipe(
        "finetune_gpt",
        [
            "--train_file", tmp_path / "train.txt", "--validation_file", tmp_path / "valid.txt", "--output_dir", out,
            "--num_train_epochs", "3", "--share_layers", "1", "--qat", "int8", *TINY_GPT,
        ],
    )  # fmt: skip
    results = read_json(out / "all_results.json")
    assert results["eval_perplexity"] <= 0.5 * results["eval_before_perplexity"]
    assert (out / "sample.txt").read_text().startswith("Once upon a time")
    model = load_trained_model(AutoModelForCausalLM, str(out))
    assert model.transformer.h[0] is model.transformer.h[1] and not model.training
    prompt = AutoTokenizer.from_pretrained(out)("Once upon a time the cat", return_tensors="pt").input_ids
    cached, uncached = (
        model.generate(
            prompt, max_new_tokens=12, do_sample=False, use_cache=flag, pad_token_id=0, output_scores=True,
            return_dict_in_generate=True,
        )
        for flag in (True, False)
    )  # fmt: skip
    assert torch.equal(cached.sequences, uncached.sequences)  # one KV-cache slot per position of the shared block
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(cached.scores, uncached.scores, strict=True))
    int8 = load_compressed(out / "int8")
    assert int8.transformer.h[0] is int8.transformer.h[1]
    assert int8.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0).shape[1] > prompt.shape[1]


@pytest.fixture(scope="module")
def toy_translation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mt")
    rows = ["en\txx"] + [f"{p['en']}\t{p['xx']}" for p in toy_pairs(64, 1)]
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    return folder / "train.tsv"


@pytest.mark.parametrize(
    "case, words",
    [
        ("qat_int4", "error: argument --qat: invalid choice: 'int4' (choose from 'int8')"),
        ("qat_peft", "error: --qat trains the full weights that int8 quantizes; it does not combine with --use_peft"),
        ("share_too_many", "error: cannot share 2 blocks into 5 groups: share_layers takes 1 to 2 groups"),
        ("share_marian", "error: finetune_translation does not take --share_layers: weight sharing merges the blocks"),
        ("compress_too_many", "error: cannot share 2 blocks into 3 groups"),
        ("compress_with_heads", "error: share_layers does not combine with prune_heads / prune_ffn"),
    ],
)
def test_bad_input_is_one_line(case, words, tiny_bert, tiny_teacher, easy_task, toy_translation, tmp_path):
    out = tmp_path / "out"
    if case.startswith("compress"):
        extra = (
            ["--share_layers", "3"] if case == "compress_too_many" else ["--share_layers", "1", "--prune_heads", ".2"]
        )
        result = run_hfopt(
            "compress", tiny_teacher, "--eval_file", easy_task["validation"], "--output_dir", out, *extra
        )
    elif case == "share_marian":
        args = ["--train_file", toy_translation, "--source_lang", "en", "--target_lang", "xx", "--output_dir", out]
        result = run_recipe("finetune_translation", [*args, *TINY_MARIAN, "--share_layers", "1"], check=False)
    else:
        extra = {
            "qat_int4": ["--qat", "int4"],
            "qat_peft": ["--qat", "int8", "--use_peft", "true"],
            "share_too_many": ["--share_layers", "5"],
        }[case]
        result = run_recipe("finetune_bert", tiny_bert_args(tiny_bert, easy_task, out, *extra), check=False)
    assert result.returncode == 2
    assert one_error_line(result).startswith(words)
    assert not (out / "model.safetensors").exists()
