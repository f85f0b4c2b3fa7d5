"""Compression for every task, and compressed models going back into training: `hfopt compress` on a causal LM
(perplexity) and a translation model (BLEU), pruned folders fine-tuned and distilled through the recipes, and
gradual pruning switched on by recipe flags (slow); the task classes' training data for a Trainer, and causal LM
tasks of prompt/completion and chat rows scored on their completions (fast)."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig

from hfopt.architectures import TASK_HEAD_PATTERNS, linear_layers
from hfopt.models import load_trained_model
from tests.testing_utils import (
    TINY_GPT,
    TINY_MARIAN,
    one_error_line,
    read_json,
    run_hfopt,
    run_recipe,
    story_lines,
    tiny_bert_args,
    toy_pairs,
)


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    """A tiny GPT-2 trained from scratch on the story task, and its text files."""
    folder = tmp_path_factory.mktemp("gpt")
    (folder / "train.txt").write_text("\n".join(story_lines(600, 1)) + "\n")
    (folder / "valid.txt").write_text("\n".join(story_lines(60, 2)) + "\n")
    args = ["--train_file", folder / "train.txt", "--validation_file", folder / "valid.txt"]
    run_recipe("finetune_gpt", [*args, "--output_dir", folder / "model", "--num_train_epochs", "3", *TINY_GPT])
    return folder


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """A tiny Marian trained from scratch on the toy translation task, and its files."""
    folder = tmp_path_factory.mktemp("marian")
    for split, n, seed in (("train", 1500, 1), ("valid", 100, 2)):
        (folder / f"{split}.jsonl").write_text(
            "\n".join(json.dumps({"translation": p}) for p in toy_pairs(n, seed)) + "\n"
        )
    run_recipe(
        "finetune_translation",
        [
            *("--train_file", folder / "train.jsonl", "--validation_file", folder / "valid.jsonl"),
            *("--source_lang", "en", "--target_lang", "xx", "--output_dir", folder / "model"),
            *("--num_train_epochs", "6", *TINY_MARIAN),
        ],
    )
    return folder


def shapes(model) -> dict:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def compress(model_dir, eval_file, out, *chain):
    result = run_hfopt(
        "compress", model_dir, "--eval_file", eval_file, "--output_dir", out, "--latency_repeats", "4", *chain
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return read_json(out / "compression_report.json")


@pytest.mark.slow
def test_compress_reports_perplexity_for_a_causal_lm(gpt, tmp_path):
    trained = read_json(gpt / "model" / "all_results.json")
    report = compress(
        gpt / "model",
        gpt / "valid.txt",
        tmp_path / "c",
        *("--prune_heads", "0.5", "--prune_ffn", "0.25", "--quantize", "dynamic_int8", "--max_new_tokens", "4"),
    )
    assert report["task"] == "causal_lm" and report["metric"] == "perplexity" and not report["higher_is_better"]
    stages = report["stages"]
    assert list(stages) == ["original", "prune_heads_0.5", "prune_ffn_0.25", "quantize_dynamic_int8"]
    original, pruned, int8 = stages["original"], stages["prune_ffn_0.25"], stages["quantize_dynamic_int8"]
    # the trained model, scored as a language model: far below the untrained model's perplexity
    assert original["perplexity"] < 0.5 * trained["eval_before_perplexity"]
    assert original["accuracy"] > trained["eval_before_accuracy"] + 0.2
    assert pruned["perplexity"] > original["perplexity"] and pruned["parameters"] < original["parameters"]
    assert int8["perplexity"] == pytest.approx(pruned["perplexity"], rel=0.05) and int8["size_reduction"] > 2
    assert int8["delta_perplexity"] == pytest.approx(int8["perplexity"] - original["perplexity"])
    assert report["latency"] == "per generated token (4 new tokens)"
    assert all(s["latency_b1_p50_ms"] > 0 and s["latency_b16_p50_ms"] > 0 for s in stages.values())
    assert "perplexity" in (tmp_path / "c" / "compression_report.md").read_text()
    # the written model is the last stage: reloaded and scored again, the same perplexity
    again = compress(tmp_path / "c" / "model", gpt / "valid.txt", tmp_path / "again", "--max_new_tokens", "2")
    assert again["stages"]["original"]["perplexity"] == pytest.approx(int8["perplexity"], rel=1e-5)


@pytest.mark.slow
def test_compress_reports_bleu_for_a_translation_model(marian, tmp_path):
    trained = read_json(marian / "model" / "all_results.json")
    report = compress(
        marian / "model",
        marian / "valid.jsonl",
        tmp_path / "c",
        *("--source_lang", "en", "--target_lang", "xx", "--prune_heads", "0.5", "--quantize", "dynamic_int8"),
    )
    assert report["task"] == "seq2seq" and report["metrics"] == ["bleu", "chrf"]
    stages = report["stages"]
    original, int8 = stages["original"], stages["quantize_dynamic_int8"]
    # greedy decoding of the same references: the recipe's own BLEU
    assert original["bleu"] == pytest.approx(trained["eval_bleu"], abs=1.0) and original["bleu"] > 40
    assert stages["prune_heads_0.5"]["parameters"] < original["parameters"]
    assert abs(int8["bleu"] - stages["prune_heads_0.5"]["bleu"]) < 5 and int8["size_reduction"] > 2
    assert int8["delta_bleu"] == pytest.approx(int8["bleu"] - original["bleu"])
    assert all(s["latency_b16_p50_ms"] > 0 for s in stages.values())
    # a classification eval file does not fit a translation model: one line naming both
    csv = tmp_path / "dev.csv"
    csv.write_text("sentence,label\nthe day was sunny,1\n")
    bad = run_hfopt("compress", marian / "model", "--eval_file", csv, "--output_dir", tmp_path / "bad")
    assert bad.returncode == 2 and "does not fit the seq2seq model" in one_error_line(bad)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_optimize_keeps_a_causal_lm_and_a_translation_model_within_a_relative_budget(gpt, marian, kind, tmp_path):
    from hfopt.optimize import OptimizeConfig, optimize

    folder, train, dev = (
        (gpt, "train.txt", "valid.txt") if kind == "causal_lm" else (marian, "train.jsonl", "valid.jsonl")
    )
    pipeline = {"latency_repeats": 2, "max_new_tokens": 2}
    if kind == "seq2seq":
        pipeline |= {"source_lang": "en", "target_lang": "xx", "max_eval_samples": 40}
    space = {"prune_heads": [0.0, 0.5], "prune_ffn": [0.0], "recover": ["none"], "quantize": ["none", "dynamic_int8"],
             "backend": ["pytorch"]}  # fmt: skip
    config = OptimizeConfig(train_file=str(folder / train), eval_file=str(folder / dev), max_relative_drop=0.1,
                            max_trials=4, objective="latency_b1", space=space, pipeline=pipeline)  # fmt: skip
    result = optimize(str(folder / "model"), config, tmp_path / "out", progress=False)
    metric = "perplexity" if kind == "causal_lm" else "bleu"
    report = read_json(tmp_path / "out" / ("model" if result.met else "closest_model") / "compression_report.json")
    assert report["metric"] == metric and report["task"] == kind
    complete = [r for r in result.trials if r["status"] == "complete"]
    assert complete and all(r["latency_b1_ms"] > 0 for r in complete)
    sign = 1 if kind == "causal_lm" else -1  # perplexity rises, BLEU falls
    for row in complete:  # the budget is relative: a fraction of the original's metric on the selection data
        assert row["loss"] == pytest.approx(sign * (row["metric"] - result.original_metric) / result.original_metric)
    # the loss has its paired standard error (perplexity: by rows; BLEU: bootstrapped), zero where the trial
    # translates every sentence as the original does
    errors = [r["loss_se"] for r in complete]
    assert all(e is not None and e >= 0 for e in errors) and max(errors) > 0
    if result.met:
        assert result.chosen["loss"] <= 0.1
        assert result.chosen["speedup_b1"] == max(r["speedup_b1"] for r in complete if r["loss"] <= 0.1)


@pytest.mark.slow
def test_a_head_pruned_causal_lm_fine_tunes_back(gpt, tmp_path):
    """prune → fine-tune in two commands: the pruned folder trains with its shapes and wins perplexity back."""
    pruned = compress(gpt / "model", gpt / "valid.txt", tmp_path / "p", "--prune_heads", "0.5", "--max_new_tokens", "2")
    lost = pruned["stages"]["prune_heads_0.5"]["perplexity"]
    out = tmp_path / "again"
    run_recipe(
        "finetune_gpt",
        [
            *("--model_name_or_path", tmp_path / "p" / "model", "--train_file", gpt / "train.txt"),
            *("--validation_file", gpt / "valid.txt", "--output_dir", out, "--num_train_epochs", "1"),
            *("--block_size", "64", "--learning_rate", "1e-3", "--per_device_train_batch_size", "8"),
            *("--disable_tqdm", "true", "--save_strategy", "no"),
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_before_perplexity"] > results["eval_perplexity"]
    assert results["eval_perplexity"] < lost
    # the fine-tuned model keeps the pruned shapes: one head of two in each block
    assert AutoConfig.from_pretrained(out).hfopt_heads_per_layer == [1, 1]
    assert shapes(load_trained_model(AutoModelForCausalLM, str(out))) == shapes(
        load_trained_model(AutoModelForCausalLM, str(tmp_path / "p" / "model"))
    )
    # and generates with its KV cache, as the model it came from (Trainer saves use_cache=False in config.json)
    assert GenerationConfig.from_pretrained(gpt / "model").use_cache is True
    assert GenerationConfig.from_pretrained(tmp_path / "p" / "model").use_cache is True
    assert load_trained_model(AutoModelForCausalLM, str(out)).generation_config.use_cache is True


@pytest.mark.slow
def test_a_head_pruned_classifier_fine_tunes_and_distils_from_the_original(tiny_teacher, easy_task, tmp_path):
    pruned = compress(tiny_teacher, easy_task["validation"], tmp_path / "p", "--prune_heads", "0.5")
    folder = tmp_path / "p" / "model"
    pruned_shapes = shapes(load_trained_model(AutoModelForSequenceClassification, str(folder)))
    assert pruned["stages"]["prune_heads_0.5"]["parameters"] < pruned["stages"]["original"]["parameters"]

    # prune → fine-tune
    tuned = tmp_path / "tuned"
    run_recipe("finetune_bert", tiny_bert_args(folder, easy_task, tuned, "--save_strategy", "no"))
    # prune → distil from the original
    distilled = tmp_path / "distilled"
    run_recipe(
        "distill_bert",
        [
            *("--teacher_model_name_or_path", tiny_teacher, "--model_name_or_path", folder),
            *("--train_file", easy_task["train"], "--validation_file", easy_task["validation"]),
            *("--output_dir", distilled, "--num_train_epochs", "3", "--learning_rate", "2e-3"),
            *("--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--save_strategy", "no"),
        ],
    )
    for out in (tuned, distilled):
        assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
        assert shapes(load_trained_model(AutoModelForSequenceClassification, str(out))) == pruned_shapes
        heads = AutoConfig.from_pretrained(out).hfopt_heads_per_layer
        assert heads == AutoConfig.from_pretrained(folder).hfopt_heads_per_layer and sum(heads) == 4  # of 2 × 4


@pytest.mark.slow
def test_gradual_pruning_from_recipe_flags_reaches_its_target(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    # the tiny model leaves its loss plateau near step 60 (of 6 epochs × 25 steps): prune once it has learnt
    flags = ("--gradual_pruning_sparsity", "0.5", "--gradual_pruning_start_step", "80")
    flags += ("--gradual_pruning_end_step", "120", "--gradual_pruning_frequency", "10", "--save_strategy", "no")
    run_recipe("finetune_bert", tiny_bert_args(tiny_bert, easy_task, out, *flags, "--num_train_epochs", "6"))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    weights = [module.weight for _, module in linear_layers(model, TASK_HEAD_PATTERNS)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.005)
    assert torch.count_nonzero(model.classifier.weight) == model.classifier.weight.numel()  # the head is kept
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9


# --- the task classes: training data for a Trainer (fast) ---------------------------------------------------------


def tiny_gpt2_for(tokenizer, positions: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def finite_loss(model, task, n: int = 8) -> float:
    data = task.train_dataset()
    batch = task.data_collator()([data[i] for i in range(min(n, len(data)))])
    loss = float(model(**batch).loss.detach())
    assert torch.isfinite(torch.tensor(loss)), loss
    return loss


def test_a_classification_task_trains_on_the_rows_of_its_file(tiny_bert, tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification, Trainer, TrainingArguments

    from hfopt.compression.tasks import ClassificationTask, load_task
    from tests.testing_utils import easy_rows, write_csv

    rows = easy_rows(24, seed=3)
    model = BertForSequenceClassification.from_pretrained(tiny_bert)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = load_task(
        "classification", model, tokenizer, str(write_csv(tmp_path / "train.csv", rows)), role="train_file", lazy=True
    )
    assert isinstance(task, ClassificationTask) and "metric_batches" not in vars(task)  # nothing tokenized yet
    data = task.train_dataset()
    assert list(data["labels"]) == [label for _, label in rows]  # the file's, in its order
    assert tokenizer.batch_decode(list(data["input_ids"]), skip_special_tokens=True) == [text for text, _ in rows]
    finite_loss(model, task)
    # importance batches pair each text with its own label
    batches = task.importance_batches(limit=24, batch_size=8)
    assert torch.cat([b["labels"] for b in batches]).tolist() == [label for _, label in rows]
    # and a plain Trainer takes them as they are
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=8,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=task.data_collator())
    assert trainer.train().training_loss > 0


def test_a_causal_lm_task_trains_on_blocks_of_its_text(tmp_path):
    from hfopt.compression.tasks import CausalLMTask, load_task
    from hfopt.tokenization import train_byte_level_bpe

    lines = story_lines(40, 1)
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    tokenizer = train_byte_level_bpe(lines, vocab_size=300)
    model = tiny_gpt2_for(tokenizer)
    task = load_task("causal_lm", model, tokenizer, str(tmp_path / "train.txt"), role="train_file", lazy=True)
    assert isinstance(task, CausalLMTask) and task.data_format == "text" and task.block_size == 64
    data = task.train_dataset()
    ids = [token for text in lines for token in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    assert len(data) == len(ids) // 64 and all(len(row) == 64 for row in data["input_ids"])
    assert [t for row in data["input_ids"] for t in row] == ids[: len(data) * 64]  # the file's tokens, in order
    assert list(data["labels"]) == list(data["input_ids"]) and all(set(m) == {1} for m in data["attention_mask"])
    finite_loss(model, task)


def test_a_seq2seq_task_trains_on_its_translation_pairs(tmp_path):
    from transformers import MarianConfig, MarianMTModel

    from hfopt.compression.tasks import Seq2SeqTask, load_task
    from hfopt.tokenization import train_seq2seq_tokenizer

    pairs = toy_pairs(30, 1)
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"translation": p}) for p in pairs) + "\n")
    tokenizer = train_seq2seq_tokenizer([p["en"] for p in pairs] + [p["xx"] for p in pairs], vocab_size=200)
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = MarianMTModel(config).eval()
    task = load_task(
        "seq2seq",
        model,
        tokenizer,
        str(tmp_path / "train.jsonl"),
        source_lang="en",
        target_lang="xx",
        role="train_file",
        lazy=True,
    )
    assert isinstance(task, Seq2SeqTask)
    data = task.train_dataset()
    assert list(data["labels"]) == tokenizer(text_target=[p["xx"] for p in pairs])["input_ids"]
    assert list(data["input_ids"]) == tokenizer([p["en"] for p in pairs])["input_ids"]
    batch = task.data_collator()([data[i] for i in range(8)])
    assert (batch["labels"] == -100).any()  # labels padded with -100, never with a token the loss would learn
    finite_loss(model, task)


def test_a_causal_lm_task_of_prompts_and_chats_scores_the_completions_only(tmp_path):
    import math

    from hfopt.compression.tasks import load_task
    from hfopt.errors import InputError
    from hfopt.tokenization import train_byte_level_bpe

    sums = [(1, 2), (3, 4), (2, 2), (5, 1), (0, 3), (4, 4)]
    rows = [{"prompt": f"Q: {a} plus {b}?", "completion": f" {a + b}"} for a, b in sums]
    (tmp_path / "pc.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    chats = [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"].strip()}]
        for r in rows
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps({"messages": m}) for m in chats) + "\n")
    tokenizer = train_byte_level_bpe([r["prompt"] + r["completion"] for r in rows] + ["User: Assistant:"], 300)
    model = tiny_gpt2_for(tokenizer)

    task = load_task("causal_lm", model, tokenizer, str(tmp_path / "pc.jsonl"))
    assert task.data_format == "prompt_completion" and task.texts == [r["prompt"] for r in rows]
    data = task.train_dataset()
    for row, example in zip(rows, data, strict=True):
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert example["input_ids"] == prompt + completion
        assert example["labels"] == [-100] * len(prompt) + completion
    # perplexity over the completion tokens: what the model's own loss says of the same batch
    loss = finite_loss(model, task, n=len(rows))
    assert task.evaluate(model)["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    per_row = task.row_losses(model)  # (summed loss, tokens) of each example's completion: paired errors use them
    assert per_row[:, 1].tolist() == [sum(label != -100 for label in e["labels"]) for e in data]
    alone = {k: torch.as_tensor(v) for k, v in task.data_collator()([data[2]]).items()}
    assert per_row[2, 0] / per_row[2, 1] == pytest.approx(float(model(**alone).loss), rel=1e-4)

    with pytest.raises(InputError, match="does not fit the causal_lm model .*has no chat template"):
        load_task("causal_lm", model, tokenizer, str(tmp_path / "chat.jsonl"))
    chat = load_task("causal_lm", model, tokenizer, str(tmp_path / "chat.jsonl"), chat_template="simple")
    assert chat.data_format == "messages" and chat.texts[0] == f"User: {rows[0]['prompt']}\nAssistant:"
    for row, example in zip(rows, chat.train_dataset(), strict=True):
        learnt = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
        assert tokenizer.decode(learnt) == f" {row['completion'].strip()}{tokenizer.eos_token}\n"  # the assistant turn
    loss = finite_loss(model, chat, n=len(rows))
    assert chat.evaluate(model)["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
