"""Instruction and chat data for causal LMs (hfopt.data.chat, hfopt.data.causal_lm): formats, completion-only
labels, padding-free packing without cross-talk (tiny GPT-2 and Llama built from configs), bad input, the demo."""

import json

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from hfopt.args import DataArguments, LanguageModelingArguments
from hfopt.data import (
    DataSources,
    arrange_examples,
    best_fit_decreasing,
    check_lm_rows,
    detect_lm_format,
    lm_modes,
    load_raw_datasets,
    packed_collator,
    render_prompt,
    seq2seq_collator,
    tokenize_for_sft,
    use_chat_template,
)
from hfopt.data.chat import render_conversation
from hfopt.errors import InputError
from hfopt.tokenization import train_byte_level_bpe
from tests.testing_utils import ROOT

WORDS = "the cat dog sun tree book milk fish star rain bird what is plus capital of spell backwards".split()
CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 3 + 4?"},
    {"role": "assistant", "content": "3 + 4 = 7."},
    {"role": "user", "content": "And the capital of Peru?"},
    {"role": "assistant", "content": "Lima."},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 9)) + f" {i} + {i % 7} = {i + i % 7}." for i in range(60)
    ]
    texts += ["System: Answer briefly.", "User: What is 3 + 4?", "Assistant: 3 + 4 = 7.", "capital of Peru? Lima."]
    tok = train_byte_level_bpe(texts, vocab_size=300)
    use_chat_template(tok, "simple")
    return tok


def prompt_completion_data(n: int = 9, seed: int = 0) -> DatasetDict:
    g = torch.Generator().manual_seed(seed)
    rows = {"prompt": [], "completion": []}
    for i in range(n):
        words = torch.randint(0, len(WORDS), (int(torch.randint(2, 12, (1,), generator=g)),), generator=g)
        rows["prompt"].append("What is " + " ".join(WORDS[w] for w in words) + "?")
        rows["completion"].append(f" It is {i} plus {i % 4}, so {i + i % 4}." + " the cat" * (i % 3))
    return DatasetDict({"train": Dataset.from_dict(rows)})


def tiny_model(family: str, vocab: int, attn: str):
    torch.manual_seed(0)
    if family == "gpt2":
        config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=vocab, attn_implementation=attn)
        config.bos_token_id = config.eos_token_id = config.pad_token_id = 0
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=vocab,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).eval()


# --- completion-only labels ---------------------------------------------------------------------------------


def test_labels_are_masked_exactly_on_prompt_user_system_and_padding(tokenizer):
    raw = DatasetDict({"train": Dataset.from_dict({"messages": [CHAT, CHAT[1:3]]})})
    rows = tokenize_for_sft(raw, tokenizer, "messages", 512, DataSources(), packing="none")["train"]
    text, spans = render_conversation(tokenizer, CHAT)
    assert text == (
        "System: Answer briefly.\nUser: What is 3 + 4?\nAssistant: 3 + 4 = 7.<|endoftext|>\n"
        "User: And the capital of Peru?\nAssistant: Lima.<|endoftext|>\n"
    )
    assert [text[a:b] for a, b in spans] == [" 3 + 4 = 7.<|endoftext|>\n", " Lima.<|endoftext|>\n"]
    ids, labels = rows[0]["input_ids"], rows[0]["labels"]
    assert tokenizer.decode(ids) == text
    learnt = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert [label for label in labels if label != -100] == learnt  # kept labels are the tokens themselves
    assert tokenizer.decode(learnt) == "".join(text[a:b] for a, b in spans)
    masked = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == -100])
    assert (
        masked == "System: Answer briefly.\nUser: What is 3 + 4?\nAssistant:User: And the capital of Peru?\nAssistant:"
    )
    # padding of a shorter row is -100 too, in both collators
    batch = seq2seq_collator(tokenizer, TrainingArguments("/tmp/unused", report_to="none"))(list(rows))
    short = len(rows[1]["input_ids"])
    assert (batch["labels"][1, short:] == -100).all() and (batch["attention_mask"][1, short:] == 0).all()
    packed = arrange_examples(
        DatasetDict({"train": rows.remove_columns("attention_mask")}), "padding_free", 512, DataSources()
    )["train"]
    batch = packed_collator(tokenizer)(list(packed))
    assert batch["labels"].ne(-100).sum() == sum(sum(x != -100 for x in r["labels"][1:]) for r in rows)


def test_prompt_completion_labels_and_completion_only_off(tokenizer):
    raw = DatasetDict({"train": Dataset.from_dict({"prompt": ["What is 3 + 4?"], "completion": [" 7."]})})
    row = tokenize_for_sft(raw, tokenizer, "prompt_completion", 64, DataSources(), packing="none")["train"][0]
    prompt = len(tokenizer("What is 3 + 4?")["input_ids"])
    assert row["labels"][:prompt] == [-100] * prompt
    assert row["labels"][prompt:] == row["input_ids"][prompt:]
    assert tokenizer.decode(row["input_ids"][prompt:]) == " 7.<|endoftext|>"
    full = tokenize_for_sft(raw, tokenizer, "prompt_completion", 64, DataSources(), "none", completion_only_loss=False)
    assert full["train"][0]["labels"] == full["train"][0]["input_ids"]


def test_chat_sample_prompt_uses_the_template(tokenizer):
    assert render_prompt(tokenizer, "What is 3 + 4?", "messages") == "User: What is 3 + 4?\nAssistant:"
    assert render_prompt(tokenizer, "Once", "text") == "Once"


# --- padding-free packing: no cross-talk, Trainer's loss normalisation ---------------------------------------


def test_best_fit_decreasing_packs_whole_items_within_capacity():
    lengths = [5, 3, 4, 2, 7, 1, 6]
    bins = best_fit_decreasing(lengths, 7)
    assert sorted(k for b in bins for k in b) == list(range(len(lengths)))
    assert all(sum(lengths[k] for k in b) <= 7 for b in bins)
    assert len(bins) == 4 == -(-sum(lengths) // 7)  # optimal here
    assert bins == best_fit_decreasing(lengths, 7)
    assert best_fit_decreasing([5, 3, 4, 2], 7) == [[0, 3], [2, 1]]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_equals_its_examples_alone(tokenizer, family, attn, tmp_path):
    examples = tokenize_for_sft(prompt_completion_data(), tokenizer, "prompt_completion", 10**6, DataSources(), "none")
    examples = examples.remove_columns("attention_mask")
    rows = arrange_examples(examples, "padding_free", 100, DataSources())["train"]
    assert len(rows) < len(examples["train"])  # several examples share a row
    assert len({len(r["input_ids"]) for r in rows}) > 1  # rows of different lengths: the batch is padded
    batch = packed_collator(tokenizer)(list(rows))
    assert "attention_mask" not in batch and batch["use_cache"] is False
    model = tiny_model(family, len(tokenizer), attn)
    assert model.config.use_cache  # the batch itself turns the cache off (else packed positions are ignored)

    trainer = Trainer(model, TrainingArguments(tmp_path, report_to="none", use_cpu=True), data_collator=lambda x: x)
    _, num_items = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    with torch.no_grad():
        packed_logits = model(**batch).logits
        packed_loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)

    total, count, seen = 0.0, 0, 0
    for r, row in enumerate(rows):
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
        for a, b in zip(starts, starts[1:], strict=False):
            ids = torch.tensor([row["input_ids"][a:b]])
            labels = torch.tensor([row["labels"][a:b]])
            with torch.no_grad():
                alone = model(input_ids=ids, labels=labels)
            torch.testing.assert_close(packed_logits[r, a:b], alone.logits[0], atol=1e-4, rtol=0)
            n = int((labels[0, 1:] != -100).sum())
            total, count, seen = total + alone.loss.item() * n, count + n, seen + 1
    assert seen == len(examples["train"]) and int(num_items) == count
    # the packed loss is the mean over the batch's completion tokens of each example's own loss
    assert packed_loss.item() == pytest.approx(total / count, abs=1e-5)


def test_without_the_collators_cache_switch_attention_would_cross_examples(tokenizer):
    """The reason for use_cache=False in the batch: with a cache, transformers skips packed-sequence detection."""
    examples = tokenize_for_sft(prompt_completion_data(4), tokenizer, "prompt_completion", 64, DataSources(), "none")
    rows = arrange_examples(examples.remove_columns("attention_mask"), "padding_free", 100, DataSources())["train"]
    batch = packed_collator(tokenizer)(list(rows))
    assert (batch["position_ids"] == 0).sum() > len(rows)  # a row holds several examples
    model = tiny_model("gpt2", len(tokenizer), "sdpa")
    with torch.no_grad():
        kept = model(**batch).logits
        crossed = model(**{**batch, "use_cache": True}).logits
    assert not torch.allclose(kept, crossed, atol=1e-3)


def test_distillation_teacher_sees_the_packed_examples_apart(tokenizer, tmp_path):
    """DistillationTrainer passes the batch to its teacher too: a teacher identical to the student, whose config
    keeps use_cache=True (Trainer turns it off for the student only), gives a KD loss of 0 on packed rows."""
    import copy

    from hfopt.distillation import DistillationTrainer, DistillationTrainingArguments

    examples = tokenize_for_sft(prompt_completion_data(), tokenizer, "prompt_completion", 100, DataSources(), "none")
    rows = arrange_examples(examples.remove_columns("attention_mask"), "padding_free", 100, DataSources())["train"]
    batch = packed_collator(tokenizer)(list(rows))
    student = tiny_model("gpt2", len(tokenizer), "sdpa")
    teacher = copy.deepcopy(student)
    args = DistillationTrainingArguments(tmp_path, alpha=0.0, report_to="none", use_cpu=True)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, data_collator=lambda x: x)
    assert teacher.config.use_cache and not student.config.use_cache
    with torch.no_grad():
        kd = trainer.compute_loss(student.eval(), dict(batch))
    assert abs(kd.item()) < 1e-6


def test_plain_text_modes_old_and_new(tokenizer):
    from hfopt.data import tokenize_for_causal_lm

    texts = ["the cat and the dog " * (i % 4 + 1) for i in range(20)]
    raw = DatasetDict({"train": Dataset.from_dict({"text": texts})})
    old = tokenize_for_causal_lm(raw, tokenizer, "text", 16, DataSources(), packing=True)["train"]
    assert old[:] == tokenize_for_causal_lm(raw, tokenizer, "text", 16, DataSources(), "blocks")["train"][:]
    assert all(len(x) == 16 for x in old["input_ids"]) and old["labels"] == old["input_ids"]
    rows = tokenize_for_causal_lm(raw, tokenizer, "text", 64, DataSources(), "padding_free")["train"]
    assert sum((torch.tensor(r) == 0).sum().item() for r in rows["position_ids"]) == len(texts)
    assert rows["labels"] == rows["input_ids"] and max(len(x) for x in rows["input_ids"]) <= 64


def test_truncation_of_long_examples_is_counted(tokenizer, caplog):
    examples = tokenize_for_sft(prompt_completion_data(), tokenizer, "prompt_completion", 10**6, DataSources(), "none")
    longest = max(len(x) for x in examples["train"]["input_ids"])
    with caplog.at_level("WARNING", logger="hfopt"):
        rows = arrange_examples(examples, "padding_free", longest - 1, DataSources())["train"]
    assert "1 of 9 examples" in caplog.text or "of 9 examples" in caplog.text
    assert max(len(r["input_ids"]) for r in rows) <= longest - 1


# --- formats, modes, bad input --------------------------------------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(tmp_path, rows, name="train.jsonl"):
    path = write_jsonl(tmp_path / name, rows)
    args = DataArguments(train_file=str(path), validation_file=str(path))
    return load_raw_datasets(args)


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "turns, expected",
    [
        ([{"role": "bot", "content": "hi"}], "turn 1 has unknown role 'bot' (roles: system, user, assistant)"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], "turn 2 is an empty assistant"),
        ([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}], "has no assistant turn"),
        ([{"role": "user", "text": "hi"}], "turn 1 is not a {role, content} mapping"),
    ],
)
def test_bad_conversations_are_one_line_naming_file_row_and_column(tmp_path, turns, expected):
    good = {"messages": CHAT}
    raw, sources = load(tmp_path, [good, good, {"messages": turns}, good])
    assert detect_lm_format(raw, sources) == "messages"
    with pytest.raises(InputError) as err:
        check_lm_rows(raw, sources, "messages")
    assert f"train_file {tmp_path / 'train.jsonl'} row 3, column 'messages': " in one_line(err)
    assert expected in one_line(err)


def test_prompt_completion_file_with_a_column_missing(tmp_path):
    raw, sources = load(tmp_path, [{"prompt": "a", "answer": "b"}] * 3)
    with pytest.raises(InputError) as err:
        detect_lm_format(raw, sources)
    assert one_line(err).startswith(f"train_file {tmp_path / 'train.jsonl'} has a 'prompt' column but no 'completion'")
    raw, sources = load(tmp_path, [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": ""}])
    with pytest.raises(InputError, match=r"row 2, column 'completion' is empty"):
        check_lm_rows(raw, sources, detect_lm_format(raw, sources))
    with pytest.raises(InputError, match=r"has no 'messages'"):
        detect_lm_format(raw, sources, "messages")


def test_block_size_below_a_prompt_leaves_nothing_to_learn(tmp_path, tokenizer):
    rows = [{"prompt": "What is 1?", "completion": " 1."}] * 2 + [{"prompt": "the cat " * 20, "completion": " 2."}]
    raw, sources = load(tmp_path, rows)
    with pytest.raises(InputError) as err:
        tokenize_for_sft(raw, tokenizer, "prompt_completion", 16, sources, "padding_free")
    assert f"train_file {tmp_path / 'train.jsonl'} row 3, column 'prompt': its prompt is" in one_line(err)
    assert "raise --block_size" in one_line(err)
    tokenize_for_sft(raw, tokenizer, "prompt_completion", 16, sources, "padding_free", completion_only_loss=False)
    tokenize_for_sft(raw, tokenizer, "prompt_completion", 16, sources, "blocks")  # blocks split examples: fine


def test_a_tokenizer_without_chat_template_names_the_flag(tokenizer):
    bare = train_byte_level_bpe(["the cat"], vocab_size=260)
    with pytest.raises(InputError, match=r"--chat_template FILE .* --chat_template simple or chatml"):
        use_chat_template(bare, None)
    with pytest.raises(InputError, match="neither a file nor one of simple, chatml"):
        use_chat_template(bare, "nope")


def test_modes_default_by_format_and_old_packing_values_still_resolve():
    sources = DataSources({"train": "train_file a.txt"})
    assert lm_modes("messages", None, None, sources) == ("padding_free", True)
    assert lm_modes("prompt_completion", "blocks", False, sources) == ("blocks", False)
    assert lm_modes("text", None, None, sources) == ("blocks", False)
    with pytest.raises(InputError, match="completion_only_loss needs prompt/completion or messages data"):
        lm_modes("text", None, True, sources)
    for old, new in [(True, "blocks"), (False, "none"), ("true", "blocks"), ("false", "none")]:
        assert LanguageModelingArguments(packing=old).packing == new
    with pytest.raises(InputError, match="packing must be none, blocks or padding_free"):
        LanguageModelingArguments(packing="yes")


def test_old_yaml_packing_true_resolves_to_blocks(tmp_path):
    from hfopt.args import ModelArguments, parse_args

    config = tmp_path / "old.yaml"
    config.write_text("packing: true\nblock_size: 32\ntrain_file: a.txt\n")
    _, _, lm, _, _ = parse_args(
        (ModelArguments, DataArguments, LanguageModelingArguments, TrainingArguments),
        "finetune_gpt",
        ["--config", str(config), "--output_dir", str(tmp_path / "o")],
    )
    assert lm.packing == "blocks"
    *_, lm, _, _ = parse_args(
        (ModelArguments, DataArguments, LanguageModelingArguments, TrainingArguments),
        "finetune_gpt",
        ["--packing", "false", "--train_file", "a.txt", "--output_dir", str(tmp_path / "o")],
    )
    assert lm.packing == "none"


def test_instruction_demo_is_small_and_valid():
    """(tests/test_repository.py checks that recipes/data/make_instruction_demo.py writes it byte for byte.)"""
    bundled = ROOT / "recipes/data/instruction"
    assert sum(p.stat().st_size for p in bundled.iterdir()) < 1_000_000
    raw, sources = load_raw_datasets(
        DataArguments(train_file=str(bundled / "train.jsonl"), validation_file=str(bundled / "validation.jsonl"))
    )
    check_lm_rows(raw, sources, detect_lm_format(raw, sources))


# --- the recipe ------------------------------------------------------------------------------------------------

DEMO = ROOT / "recipes/data/instruction"


@pytest.mark.slow
def test_recipe_trains_chat_data_padding_free_and_stops_bad_rows_in_one_line(tmp_path):
    from tests.testing_utils import TINY_GPT, one_error_line, read_json, run_recipe

    out = tmp_path / "chat"
    common = ["--validation_file", DEMO / "validation.jsonl", "--max_eval_samples", 40, *TINY_GPT]
    run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            DEMO / "train.jsonl",
            "--max_train_samples",
            600,
            *common,
            "--chat_template",
            "simple",
            "--max_steps",
            40,
            "--prompt",
            "What is 2 + 2?",
            "--max_new_tokens",
            8,
            "--output_dir",
            out,
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_perplexity"] < 0.2 * results["eval_before_perplexity"]
    assert (out / "sample.txt").read_text().startswith("User: What is 2 + 2?\nAssistant:")
    assert "packing: padding_free" not in (out / "config.yaml").read_text()  # unset: resolved from the data
    assert "{% for message in messages %}" in (out / "tokenizer_config.json").read_text() + "".join(
        p.read_text() for p in out.glob("*.jinja")
    )

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": CHAT}, {"messages": [{"role": "user", "content": "hi"}]}])
    result = run_recipe(
        "finetune_gpt",
        ["--train_file", bad, *common, "--chat_template", "simple", "--output_dir", tmp_path / "bad"],
        check=False,
    )
    assert result.returncode == 2
    assert one_error_line(result) == (
        f"error: train_file {bad} row 2, column 'messages': the conversation has no assistant turn, so nothing to learn"
    )


@pytest.mark.slow
def test_recipe_prompt_completion_with_lora(tmp_path):
    from tests.testing_utils import TINY_GPT, read_json, run_recipe

    rows = [{"prompt": f"What is {i % 10} + {i % 7}?", "completion": f" {i % 10 + i % 7}."} for i in range(300)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            train,
            "--validation_file",
            train,
            "--max_eval_samples",
            40,
            *TINY_GPT,
            "--use_peft",
            "true",
            "--lora_target_modules",
            "c_attn",
            "--max_steps",
            10,
            "--prompt",
            "What is 1 + 2?",
            "--max_new_tokens",
            4,
            "--output_dir",
            out,
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_loss"] < results["eval_before_loss"]
    assert (out / "sample.txt").read_text().startswith("What is 1 + 2?")


def test_padding_free_is_refused_for_a_model_whose_attention_crosses_packed_examples():
    """OPT (and BLOOM) do not read restarting position ids: packed examples would attend to each other."""
    from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

    from hfopt.data import check_packed_attention
    from hfopt.errors import InputError

    check_packed_attention(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)))
    opt = OPTForCausalLM(
        OPTConfig(num_hidden_layers=1, hidden_size=32, ffn_dim=64, num_attention_heads=2, vocab_size=50)
    )
    with pytest.raises(InputError, match="model type 'opt' does not keep packed examples apart.*--packing none"):
        check_packed_attention(opt)
