"""Fine-tune (or train from scratch) a GPT-style causal language model.

    accelerate launch recipes/finetune_gpt.py                                   # bundled demo, offline
    accelerate launch recipes/finetune_gpt.py --config recipes/configs/gpt2_wikitext.yaml
    accelerate launch recipes/finetune_gpt.py --model_name_or_path gpt2 --train_file notes.txt --use_peft true

Flow: arguments (defaults < YAML < flags) → seed and logging → data, checked → tokenizer (trained on the fly
when training from scratch without one) → model (pretrained or from a config; LoRA optional) → token blocks
(main process first) → Trainer → evaluate before training → train (resuming) → evaluate → sample → results.
"""

from pathlib import Path

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from hfopt.args import (
    RECIPE_DEFAULTS,
    DataArguments,
    LanguageModelingArguments,
    ModelArguments,
    PeftArguments,
    RunArguments,
    StrategyArguments,
    parse_args,
    save_config,
)
from hfopt.data import LM_EXTENSIONS, check_block_size, check_texts, detect_text_column, load_raw_datasets
from hfopt.data import seq2seq_collator, tokenize_for_causal_lm
from hfopt.metrics import add_perplexity, argmax_logits, next_token_accuracy
from hfopt.models import apply_lora, load_config, load_model, load_tokenizer, save_merged, use_batch_mean_loss
from hfopt.run import checkpoint_to_resume, exit_on_input_error, finish_run, logger, start_run, train_and_save
from hfopt.run import write_text_atomic
from hfopt.strategies import apply_strategies, check_strategies

RECIPE = "finetune_gpt"
ARGUMENTS = (ModelArguments, DataArguments, LanguageModelingArguments, StrategyArguments, PeftArguments, RunArguments,
             TrainingArguments)
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
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    eval_before_training=True,
    learning_rate=5e-5,
    num_train_epochs=3,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=8,
    warmup_steps=0.05,
)


@exit_on_input_error
def main(argv=None):
    model_args, data_args, lm_args, strategy_args, peft_args, run_args, training_args = parse_args(
        ARGUMENTS, RECIPE, argv, defaults=DEFAULTS, demo=DEMO
    )
    start_run(training_args)
    check_strategies(strategy_args, training_args)

    # Data, checked before any model is built.
    raw = load_raw_datasets(data_args, seed=training_args.seed, cache_dir=model_args.cache_dir,
                            token=model_args.token, extensions=LM_EXTENSIONS)
    text_column = detect_text_column(raw, (data_args.text_column_names or [None])[0])
    raw = raw.filter(lambda row: bool(row[text_column] and row[text_column].strip()))  # blank lines of .txt files
    check_texts(raw, [text_column])

    tokenizer = load_tokenizer(model_args, train_texts=raw["train"][text_column])
    config = load_config(model_args, tokenizer)
    block_size = check_block_size(lm_args.block_size, config, tokenizer)
    model = load_model(AutoModelForCausalLM, model_args, config, tokenizer)
    use_batch_mean_loss(model)  # a no-op for models whose loss honours num_items_in_batch (GPT-2 does)
    model = apply_lora(model, peft_args, task_type="CAUSAL_LM")
    logger.info("Model: %s parameters (%s trainable); block_size %d", f"{model.num_parameters():,}",
                f"{model.num_parameters(only_trainable=True):,}", block_size)

    with training_args.main_process_first(desc="tokenizing"):
        blocks = tokenize_for_causal_lm(raw, tokenizer, text_column, block_size, lm_args.packing,
                                        data_args.preprocessing_num_workers)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=blocks["train"] if training_args.do_train else None,
        eval_dataset=blocks["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=seq2seq_collator(tokenizer, training_args),
        preprocess_logits_for_metrics=argmax_logits,
        compute_metrics=next_token_accuracy,
    )
    apply_strategies(trainer, strategy_args, tokenizer)
    if trainer.is_world_process_zero():
        save_config(training_args.hfopt_config, training_args.output_dir)

    results = {}
    checkpoint = checkpoint_to_resume(training_args, start_fresh=run_args.start_fresh) if training_args.do_train else None
    if training_args.do_eval and run_args.eval_before_training and checkpoint is None:
        results.update(add_perplexity(trainer.evaluate(metric_key_prefix="eval_before"), "eval_before"))
    if training_args.do_train:
        results.update(train_and_save(trainer, checkpoint))
        if peft_args.use_peft and peft_args.merge_adapters and trainer.is_world_process_zero():
            logger.info("Merged model saved to %s", save_merged(trainer.model, tokenizer, training_args.output_dir))
    if training_args.do_eval:
        results.update(add_perplexity(trainer.evaluate()))

    sample = generate_sample(trainer.model, tokenizer, lm_args.prompt, lm_args.max_new_tokens)
    if trainer.is_world_process_zero():
        write_text_atomic(Path(training_args.output_dir) / "sample.txt", sample + "\n")
        print(f"\nSample from the prompt {lm_args.prompt!r}:\n{sample}\n")
        if "eval_before_perplexity" in results:
            print(f"Perplexity before training {results['eval_before_perplexity']:.2f}, "
                  f"after {results['eval_perplexity']:.2f}")
    finish_run(trainer, results, title=RECIPE)
    return results


def generate_sample(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy continuation of prompt by the trained model."""
    import torch

    model.eval()
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0], skip_special_tokens=True)


if __name__ == "__main__":
    main()
