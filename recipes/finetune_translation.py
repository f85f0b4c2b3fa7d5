"""Fine-tune (or train from scratch) an encoder-decoder translation model: Marian, T5, BART, mBART.

    accelerate launch recipes/finetune_translation.py                          # bundled demo, offline
    accelerate launch recipes/finetune_translation.py --config recipes/configs/opus_mt_en_de.yaml
    accelerate launch recipes/finetune_translation.py --config recipes/configs/t5_small_en_de.yaml

Flow: arguments (defaults < YAML < flags) → seed, logging, threads → what to do with output_dir → parallel
data, checked → tokenizer (trained on the fly when training from scratch without one) → model → tokenization
(main process first) → Seq2SeqTrainer generating for BLEU/chrF → evaluate before training → train (resuming)
→ evaluate → predict → results.
"""

import hfopt  # noqa: F401  (first: it drops known-harmless third-party import-time lines, hfopt.quiet)

# isort: split
import logging
from itertools import chain
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

from hfopt.args import (
    RECIPE_DEFAULTS,
    CompressionArguments,
    DataArguments,
    ModelArguments,
    RunArguments,
    StrategyArguments,
    TranslationArguments,
    parse_args,
    reject_unsupported,
)
from hfopt.data import (
    load_raw_datasets,
    seq2seq_collator,
    tokenize_for_translation,
    translation_pairs,
)
from hfopt.errors import InputError
from hfopt.hardware import mixed_precision
from hfopt.latency import trained_model_latency
from hfopt.metrics import task_metrics
from hfopt.models import load_config, load_model, load_tokenizer
from hfopt.run import (
    check_metric_for_best_model,
    finish_run,
    recipe_main,
    report_complete_run,
    write_text_atomic,
)
from hfopt.workflow import begin_run, build_trainer, prepare_model, search, train

RECIPE = "finetune_translation"
logger = logging.getLogger(f"hfopt.recipes.{RECIPE}")
ARGUMENTS = (
    ModelArguments,
    DataArguments,
    TranslationArguments,
    StrategyArguments,
    CompressionArguments,
    RunArguments,
    Seq2SeqTrainingArguments,
)
DEMO_DATA = Path(__file__).resolve().parent / "data" / "toy_translation"
# Without data and model arguments: a small Marian model trained from scratch on the bundled toy language
# pair, with a BPE tokenizer trained on it.
DEMO = dict(
    train_file=str(DEMO_DATA / "train.jsonl"),
    validation_file=str(DEMO_DATA / "validation.jsonl"),
    source_lang="en",
    target_lang="toy",
    model_type="marian",
    config_overrides=(
        "d_model=128,encoder_layers=2,decoder_layers=2,encoder_attention_heads=4,"
        "decoder_attention_heads=4,encoder_ffn_dim=256,decoder_ffn_dim=256,"
        "max_position_embeddings=64,scale_embedding=True"
    ),
    tokenizer_vocab_size=400,
    max_source_length=32,
    max_target_length=32,
    num_train_epochs=6,
    learning_rate=2e-3,
    per_device_train_batch_size=32,
)
# Shared flags this recipe cannot honour: giving one is an error.
UNSUPPORTED = {
    "text_column_names": "name the languages with --source_lang and --target_lang",
    "label_column_name": "translation pairs have no labels",
    "num_labels": "a translation model has no classes",
    "ignore_mismatched_sizes": "a translation model keeps its own head",
    "max_seq_length": "sources and targets are cut by --max_source_length and --max_target_length",
    "share_layers": "weight sharing merges the blocks of one stack; an encoder-decoder has two",
    "share_layers_init": "weight sharing merges the blocks of one stack; an encoder-decoder has two",
}
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    batching="length",  # batches of similar-length rows: far less padding (bench/recipe_vs_baselines.py)
    eval_before_training=True,
    predict_with_generate=True,
    learning_rate=5e-5,
    num_train_epochs=3,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    warmup_steps=0.05,
    logging_steps=20,
)


def validate(arguments) -> None:
    """What this recipe refuses once its arguments are parsed (`hfopt compare --dry_run` calls it too)."""
    model_args, data_args, mt_args, strategy_args, compression_args, run_args, training_args = arguments
    reject_unsupported(arguments, UNSUPPORTED, RECIPE)
    if not (mt_args.source_lang and mt_args.target_lang):
        raise InputError("name the language pair with --source_lang and --target_lang")
    if not training_args.predict_with_generate and (run_args.metric or training_args.metric_for_best_model):
        raise InputError("translation metrics come from generated text: keep --predict_with_generate true")


@recipe_main
def main(argv: list[str] | None = None) -> dict:
    *arguments, config = parse_args(ARGUMENTS, RECIPE, argv, defaults=DEFAULTS, demo=DEMO)
    model_args, data_args, mt_args, strategy_args, compression_args, run_args, training_args = arguments
    validate(arguments)
    plan = begin_run(training_args, run_args, data_args, config, arguments, title=RECIPE)
    if plan.complete:
        return report_complete_run(training_args, RECIPE)
    warn_about_fp16_with_t5(model_args, training_args)

    # Data, checked before any model is built.
    raw, sources = load_raw_datasets(
        data_args, seed=training_args.seed, cache_dir=model_args.cache_dir, token=model_args.token
    )
    pairs = translation_pairs(raw, mt_args.source_lang, mt_args.target_lang, sources)

    train_texts = chain(pairs["train"]["source"], pairs["train"]["target"])
    tokenizer = load_tokenizer(model_args, train_texts=train_texts, kind="seq2seq")
    compute_metrics, metric_names = task_metrics("translation", run_args.metric, tokenizer)
    check_metric_for_best_model(training_args, metric_names, RECIPE)
    model_config = load_config(model_args, tokenizer)
    check_lengths(model_config, mt_args, training_args)
    training_args.generation_max_length = training_args.generation_max_length or mt_args.max_target_length
    training_args.generation_num_beams = mt_args.num_beams or training_args.generation_num_beams

    collator = seq2seq_collator(tokenizer, training_args)

    def model_init(trial=None):  # a fresh model per hyperparameter-search trial, else called once
        model = load_model(AutoModelForSeq2SeqLM, model_args, model_config, tokenizer)
        set_language_codes(model, tokenizer, mt_args)
        # saved with the model: generate() and hfopt compress then stop where this run's evaluation did
        model.generation_config.max_length = training_args.generation_max_length
        collator.model = model  # it makes the decoder inputs from the labels (label smoothing takes them out)
        return prepare_model(model, compression_args)  # weight sharing refuses encoder-decoders

    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_for_translation(
            pairs,
            tokenizer,
            mt_args.max_source_length,
            mt_args.max_target_length,
            mt_args.source_prefix or "",
            data_args.preprocessing_num_workers,
        )

    trainer = build_trainer(
        Seq2SeqTrainer,
        model_init,
        strategy_args,
        compression_args,
        args=training_args,
        train_dataset=tokenized["train"] if training_args.do_train else None,
        eval_dataset=tokenized["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics if training_args.predict_with_generate else None,
    )
    if strategy_args.hp_search_trials:
        return search(trainer, plan, strategy_args, "eval_bleu", metric_names)
    results = train(trainer, plan, run_args)
    if training_args.do_predict and "test" in tokenized:
        prediction = trainer.predict(tokenized["test"], metric_key_prefix="test")
        results.update(prediction.metrics)
        if trainer.is_world_process_zero() and training_args.predict_with_generate:
            ids = prediction.predictions.clip(min=0)
            lines = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
            write_text_atomic(Path(training_args.output_dir) / "predictions.txt", "\n".join(lines) + "\n")
    if run_args.measure_latency:  # greedy generation, per new token
        results.update(trained_model_latency(trainer, pairs["validation"]["source"], new_tokens=16))
    if trainer.is_world_process_zero() and "eval_before_bleu" in results and "eval_bleu" in results:
        print(f"BLEU before training {results['eval_before_bleu']:.2f}, after {results['eval_bleu']:.2f}")
    finish_run(trainer, results, plan=plan, keep_checkpoints=run_args.keep_checkpoints)
    return results


def check_lengths(config, mt_args, training_args) -> None:
    """Sources and targets (and generation) must fit the model's learned or fixed positions (T5's are relative)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not limit or config.model_type in ("t5", "mt5", "umt5"):
        return
    for name, value in (
        ("max_source_length", mt_args.max_source_length),
        ("max_target_length", mt_args.max_target_length),
        ("generation_max_length", training_args.generation_max_length),
    ):
        if value and value > limit:
            raise InputError(f"{name} {value} is larger than the model's {limit} positions")


def set_language_codes(model, tokenizer, mt_args) -> None:
    """mBART-style tokenizers take language codes (en_XX, de_DE): set them, and force the target code as the
    first generated token."""
    if not hasattr(tokenizer, "src_lang"):
        return
    tokenizer.src_lang, tokenizer.tgt_lang = mt_args.source_lang, mt_args.target_lang
    code_id = tokenizer.convert_tokens_to_ids(mt_args.target_lang)
    if code_id == tokenizer.unk_token_id:
        raise InputError(
            f"target_lang '{mt_args.target_lang}' is not a language code of this tokenizer "
            "(mBART codes look like de_DE)"
        )
    model.generation_config.forced_bos_token_id = code_id


def warn_about_fp16_with_t5(model_args, training_args) -> None:
    """T5 activations overflow fp16 and the loss turns NaN; bf16 has the range."""
    name = f"{model_args.model_name_or_path or ''} {model_args.config_name or ''} {model_args.model_type or ''}".lower()
    if "t5" in name and mixed_precision(training_args) == "fp16":
        logger.warning(
            "fp16 with T5 is a known source of NaN losses (activations overflow fp16): prefer "
            "accelerate_configs/bf16.yaml on GPUs that support bf16, or fp32."
        )


if __name__ == "__main__":
    main()
