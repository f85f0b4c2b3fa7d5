"""Fine-tune (or train from scratch) a GPT-style causal language model.

    accelerate launch recipes/finetune_gpt.py                                   # bundled demo, offline
    accelerate launch recipes/finetune_gpt.py --config recipes/configs/gpt2_wikitext.yaml
    accelerate launch recipes/finetune_gpt.py --model_name_or_path gpt2 --train_file notes.txt --use_peft true
    accelerate launch recipes/finetune_gpt.py --config recipes/configs/gpt_instruction_demo.yaml  # chat, offline

Flow: arguments (defaults < YAML < flags) → seed, logging, threads → what to do with output_dir → data,
checked → tokenizer (trained on the fly when training from scratch without one) → model (pretrained or from a
config; LoRA optional) → token rows: text, prompt/completion or chat, completion-only labels, packed (main
process first) → Trainer and strategies → evaluate before
training → train (resuming) → evaluate → sample → results.
"""

import hfopt  # noqa: F401  (first: it drops known-harmless third-party import-time lines, hfopt.quiet)

# isort: split
import logging
from pathlib import Path

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from hfopt.args import (
    RECIPE_DEFAULTS,
    CompressionArguments,
    DataArguments,
    LanguageModelingArguments,
    ModelArguments,
    PeftArguments,
    RunArguments,
    StrategyArguments,
    parse_args,
    reject_unsupported,
)
from hfopt.data import (
    LM_EXTENSIONS,
    check_block_size,
    check_lm_rows,
    check_packed_attention,
    detect_lm_format,
    detect_text_column,
    drop_blank_texts,
    example_texts,
    lm_modes,
    load_raw_datasets,
    packed_collator,
    render_prompt,
    seq2seq_collator,
    tokenize_for_causal_lm,
    tokenize_for_sft,
    use_chat_template,
)
from hfopt.errors import InputError
from hfopt.latency import trained_model_latency
from hfopt.metrics import add_perplexity, argmax_logits, task_metrics
from hfopt.models import (
    check_model_task,
    load_config,
    load_model,
    load_tokenizer,
)
from hfopt.run import (
    check_metric_for_best_model,
    finish_run,
    recipe_main,
    report_complete_run,
    write_text_atomic,
)
from hfopt.workflow import begin_run, build_trainer, prepare_model, search, train

RECIPE = "finetune_gpt"
logger = logging.getLogger(f"hfopt.recipes.{RECIPE}")
ARGUMENTS = (
    ModelArguments,
    DataArguments,
    LanguageModelingArguments,
    StrategyArguments,
    CompressionArguments,
    PeftArguments,
    RunArguments,
    TrainingArguments,
)
DEMO_DATA = Path(__file__).resolve().parent / "data" / "stories"
# Without data and model arguments: a small GPT-2 trained from scratch on the bundled stories, with a
# byte-level BPE tokenizer trained on them.
DEMO = dict(
    train_file=str(DEMO_DATA / "train.txt"),
    validation_file=str(DEMO_DATA / "validation.txt"),
    model_type="gpt2",
    config_overrides="n_layer=2,n_head=4,n_embd=128,n_positions=256",
    tokenizer_vocab_size=1000,
    block_size=128,
    num_train_epochs=2,
    learning_rate=2e-3,
)
# Shared flags this recipe cannot honour: giving one is an error.
UNSUPPORTED = {
    "label_column_name": "a language model learns from text alone",
    "num_labels": "a language model has no classes",
    "ignore_mismatched_sizes": "a language model keeps its own head",
    "max_seq_length": "a language model's examples are --block_size tokens long",
    "augment_deletion_prob": "deleting tokens from a language model's input would misalign it with its labels",
    "augment_swap_prob": "swapping tokens in a language model's input would misalign it with its labels",
    "augment_mask_prob": "masking a language model's input would misalign it with its labels",
}
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    eval_before_training=True,
    learning_rate=5e-5,
    num_train_epochs=3,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=8,
    warmup_steps=0.05,
)


def validate(arguments) -> None:
    """What this recipe refuses once its arguments are parsed (`hfopt compare --dry_run` calls it too)."""
    reject_unsupported(arguments, UNSUPPORTED, RECIPE)


@recipe_main
def main(argv: list[str] | None = None) -> dict:
    *arguments, config = parse_args(ARGUMENTS, RECIPE, argv, defaults=DEFAULTS, demo=DEMO)
    model_args, data_args, lm_args, strategy_args, compression_args, peft_args, run_args, training_args = arguments
    validate(arguments)
    plan = begin_run(training_args, run_args, data_args, config, arguments, title=RECIPE)
    if plan.complete:
        return report_complete_run(training_args, RECIPE)

    # Data, checked before any model is built.
    raw, sources = load_raw_datasets(
        data_args,
        seed=training_args.seed,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
        extensions=LM_EXTENSIONS,
    )
    data_format = detect_lm_format(raw, sources, lm_args.data_format)  # text, prompt_completion or messages
    packing, completion_only = lm_modes(data_format, lm_args.packing, lm_args.completion_only_loss, sources)
    if data_format == "text":
        if len(data_args.text_column_names or []) > 1:
            raise InputError("a language model reads one text column: give one --text_column_names")
        text_column = detect_text_column(raw, sources, (data_args.text_column_names or [None])[0])
        raw = drop_blank_texts(raw, text_column, sources)  # the empty lines of .txt files
        train_texts = (t for t in raw["train"][text_column])
    else:
        check_lm_rows(raw, sources, data_format)  # unknown roles, empty or missing assistant turns, ...
        train_texts = example_texts(raw["train"], data_format)
    logger.info("data_format %s, packing %s, completion_only_loss %s", data_format, packing, completion_only)
    compute_metrics, metric_names = task_metrics("causal_lm", run_args.metric)
    check_metric_for_best_model(training_args, metric_names, RECIPE)

    tokenizer = load_tokenizer(model_args, train_texts=train_texts, kind="byte_level_bpe")
    if data_format == "messages":
        use_chat_template(tokenizer, lm_args.chat_template)  # saved with the tokenizer
    model_config = load_config(model_args, tokenizer)
    check_model_task(model_config, AutoModelForCausalLM)  # a model that cannot do this task, by name
    block_size = check_block_size(lm_args.block_size, model_config, tokenizer)
    logger.info("block_size %d", block_size)

    def model_init(trial=None):  # a fresh model per hyperparameter-search trial, else called once
        model = load_model(AutoModelForCausalLM, model_args, model_config, tokenizer)
        if packing == "padding_free":
            check_packed_attention(model)  # OPT, BLOOM: attention would cross packed examples
        return prepare_model(model, compression_args, peft_args, task_type="CAUSAL_LM")

    with training_args.main_process_first(desc="tokenizing"):
        if data_format == "text":
            blocks = tokenize_for_causal_lm(
                raw, tokenizer, text_column, block_size, sources, packing, data_args.preprocessing_num_workers
            )
        else:
            blocks = tokenize_for_sft(
                raw,
                tokenizer,
                data_format,
                block_size,
                sources,
                packing,
                completion_only,
                data_args.preprocessing_num_workers,
            )
    # padding_free: rows of whole examples, positions restarting per example (attention stays within each)
    collator = packed_collator(tokenizer) if packing == "padding_free" else seq2seq_collator(tokenizer, training_args)

    trainer = build_trainer(
        Trainer,
        model_init,
        strategy_args,
        compression_args,
        args=training_args,
        train_dataset=blocks["train"] if training_args.do_train else None,
        eval_dataset=blocks["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=collator,
        preprocess_logits_for_metrics=argmax_logits,
        compute_metrics=compute_metrics,
    )
    if strategy_args.hp_search_trials:
        return search(trainer, plan, strategy_args, "eval_loss", metric_names)
    results = train(trainer, plan, run_args, peft_args, postprocess=add_perplexity)
    if training_args.do_predict and "test" in blocks:  # perplexity of the test text
        results.update(add_perplexity(trainer.evaluate(blocks["test"], metric_key_prefix="test"), "test"))
    if run_args.measure_latency:
        texts = (
            raw["validation"][text_column]
            if data_format == "text"
            else example_texts(raw["validation"], data_format, tokenizer)
        )
        results.update(trained_model_latency(trainer, texts))

    prompt = render_prompt(tokenizer, lm_args.prompt, data_format)  # chat: --prompt as the user turn
    sample = generate_sample(
        trainer.model, tokenizer, prompt, lm_args.max_new_tokens, add_special_tokens=data_format != "messages"
    )
    if trainer.is_world_process_zero():
        write_text_atomic(Path(training_args.output_dir) / "sample.txt", sample + "\n")
        print(f"\nSample from the prompt {lm_args.prompt!r}:\n{sample}\n")
        if "eval_before_perplexity" in results and "eval_perplexity" in results:
            print(
                f"Perplexity before training {results['eval_before_perplexity']:.2f}, "
                f"after {results['eval_perplexity']:.2f}"
            )
    finish_run(trainer, results, plan=plan, keep_checkpoints=run_args.keep_checkpoints)
    return results


def generate_sample(model, tokenizer, prompt: str, max_new_tokens: int, add_special_tokens: bool = True) -> str:
    """Greedy continuation of prompt by the trained model (a rendered chat prompt holds its special tokens
    already: add_special_tokens=False)."""
    import torch

    model.eval()
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=add_special_tokens).to(model.device)
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(output[0], skip_special_tokens=True)


if __name__ == "__main__":
    main()
