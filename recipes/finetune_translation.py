"""Fine-tune (or train from scratch) an encoder-decoder translation model: Marian, T5, BART, mBART.

    accelerate launch recipes/finetune_translation.py                          # bundled demo, offline
    accelerate launch recipes/finetune_translation.py --config recipes/configs/opus_mt_en_de.yaml
    accelerate launch recipes/finetune_translation.py --config recipes/configs/t5_small_en_de.yaml

Flow: arguments (defaults < YAML < flags) → seed and logging → parallel data, checked → tokenizer (trained on
the fly when training from scratch without one) → model → tokenization (main process first) →
Seq2SeqTrainer generating for BLEU/chrF → evaluate before training → train (resuming) → evaluate → predict →
results.
"""

import logging
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

from hfopt.args import (
    RECIPE_DEFAULTS,
    DataArguments,
    ModelArguments,
    RunArguments,
    StrategyArguments,
    TranslationArguments,
    parse_args,
    save_config,
)
from hfopt.data import load_raw_datasets, seq2seq_collator, tokenize_for_translation, translation_pairs
from hfopt.errors import InputError
from hfopt.metrics import translation_metrics
from hfopt.models import load_config, load_model, load_tokenizer, use_batch_mean_loss
from hfopt.run import checkpoint_to_resume, exit_on_input_error, finish_run, logger, start_run, train_and_save
from hfopt.run import write_text_atomic
from hfopt.strategies import apply_strategies, check_strategies

RECIPE = "finetune_translation"
ARGUMENTS = (ModelArguments, DataArguments, TranslationArguments, StrategyArguments, RunArguments,
             Seq2SeqTrainingArguments)
DEMO_DATA = Path(__file__).resolve().parent / "data" / "toy_translation"
# Without data and model arguments: a small Marian model trained from scratch on the bundled toy language
# pair, with a BPE tokenizer trained on it.
DEMO = dict(
    train_file=str(DEMO_DATA / "train.jsonl"),
    validation_file=str(DEMO_DATA / "validation.jsonl"),
    source_lang="en",
    target_lang="toy",
    model_type="marian",
    config_overrides=("d_model=128,encoder_layers=2,decoder_layers=2,encoder_attention_heads=4,"
                      "decoder_attention_heads=4,encoder_ffn_dim=256,decoder_ffn_dim=256,"
                      "max_position_embeddings=64,scale_embedding=True"),
    tokenizer_vocab_size=400,
    max_source_length=32,
    max_target_length=32,
    num_train_epochs=6,
    learning_rate=2e-3,
    per_device_train_batch_size=32,
)
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    eval_before_training=True,
    predict_with_generate=True,
    learning_rate=5e-5,
    num_train_epochs=3,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    warmup_steps=0.05,
    logging_steps=20,
)


@exit_on_input_error
def main(argv=None):
    model_args, data_args, mt_args, strategy_args, run_args, training_args = parse_args(
        ARGUMENTS, RECIPE, argv, defaults=DEFAULTS, demo=DEMO
    )
    if not (mt_args.source_lang and mt_args.target_lang):
        raise InputError("name the language pair with --source_lang and --target_lang")
    start_run(training_args)
    check_strategies(strategy_args, training_args)
    warn_about_fp16_with_t5(model_args, training_args)

    # Data, checked before any model is built.
    raw = load_raw_datasets(data_args, seed=training_args.seed, cache_dir=model_args.cache_dir, token=model_args.token)
    pairs = translation_pairs(raw, mt_args.source_lang, mt_args.target_lang)

    tokenizer = load_tokenizer(model_args, train_texts=[*pairs["train"]["source"], *pairs["train"]["target"]],
                               seq2seq=True)
    config = load_config(model_args, tokenizer)
    model = load_model(AutoModelForSeq2SeqLM, model_args, config, tokenizer)
    set_language_codes(model, tokenizer, mt_args)
    use_batch_mean_loss(model)
    training_args.generation_max_length = training_args.generation_max_length or mt_args.max_target_length
    training_args.generation_num_beams = mt_args.num_beams or training_args.generation_num_beams
    logger.info("Model: %s parameters", f"{model.num_parameters():,}")

    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_for_translation(pairs, tokenizer, mt_args.max_source_length, mt_args.max_target_length,
                                             mt_args.source_prefix or "", data_args.preprocessing_num_workers)

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"] if training_args.do_train else None,
        eval_dataset=tokenized["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=seq2seq_collator(tokenizer, training_args, model),
        compute_metrics=translation_metrics(tokenizer) if training_args.predict_with_generate else None,
    )
    apply_strategies(trainer, strategy_args, tokenizer)
    if trainer.is_world_process_zero():
        save_config(training_args.hfopt_config, training_args.output_dir)

    results = {}
    checkpoint = checkpoint_to_resume(training_args, start_fresh=run_args.start_fresh) if training_args.do_train else None
    if training_args.do_eval and run_args.eval_before_training and checkpoint is None:
        results.update(trainer.evaluate(metric_key_prefix="eval_before"))
    if training_args.do_train:
        results.update(train_and_save(trainer, checkpoint))
    if training_args.do_eval:
        results.update(trainer.evaluate())
    if training_args.do_predict and "test" in tokenized:
        prediction = trainer.predict(tokenized["test"], metric_key_prefix="test")
        results.update(prediction.metrics)
        if trainer.is_world_process_zero() and training_args.predict_with_generate:
            ids = prediction.predictions.clip(min=0)
            lines = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
            write_text_atomic(Path(training_args.output_dir) / "predictions.txt", "\n".join(lines) + "\n")
    if trainer.is_world_process_zero() and "eval_before_bleu" in results:
        print(f"BLEU before training {results['eval_before_bleu']:.2f}, after {results['eval_bleu']:.2f}")
    finish_run(trainer, results, title=RECIPE)
    return results


def set_language_codes(model, tokenizer, mt_args) -> None:
    """mBART-style tokenizers take language codes (en_XX, de_DE): set them, and force the target code as the
    first generated token."""
    if not hasattr(tokenizer, "src_lang"):
        return
    tokenizer.src_lang, tokenizer.tgt_lang = mt_args.source_lang, mt_args.target_lang
    code_id = tokenizer.convert_tokens_to_ids(mt_args.target_lang)
    if code_id == tokenizer.unk_token_id:
        raise InputError(f"target_lang '{mt_args.target_lang}' is not a language code of this tokenizer "
                         "(mBART codes look like de_DE)")
    model.generation_config.forced_bos_token_id = code_id


def warn_about_fp16_with_t5(model_args, training_args) -> None:
    """T5 activations overflow fp16 and the loss turns NaN; bf16 has the range."""
    name = f"{model_args.model_name_or_path or ''} {model_args.config_name or ''} {model_args.model_type or ''}".lower()
    if "t5" in name and (training_args.fp16 or getattr(training_args, "mixed_precision", "no") == "fp16"):
        logging.getLogger("hfopt").warning(
            "fp16 with T5 is a known source of NaN losses (activations overflow fp16): prefer "
            "accelerate_configs/bf16.yaml on GPUs that support bf16, or fp32."
        )


if __name__ == "__main__":
    main()
