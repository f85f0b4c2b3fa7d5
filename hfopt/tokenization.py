"""Tokenizers trained on the fly (with the `tokenizers` library) for models trained from scratch."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["TRAINERS", "train_byte_level_bpe", "train_seq2seq_tokenizer"]


def train_byte_level_bpe(
    texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 1024, eos_token: str = "<|endoftext|>"
) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer learnt from texts; pad = eos, as in GPT-2.

    Example::

        tokenizer = train_byte_level_bpe(open("corpus.txt"), vocab_size=1000)
        tokenizer.save_pretrained("my_tokenizer")
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=eos_token,
        bos_token=eos_token,
        unk_token=eos_token,
        pad_token=eos_token,
        model_max_length=model_max_length,
    )


def train_seq2seq_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A shared source/target BPE tokenizer for an encoder-decoder trained from scratch (Marian-style).

    Special tokens: `<pad>` (id 0, also the decoder start), `</s>` (appended to every text) and `<unk>`.

    Example::

        tokenizer = train_seq2seq_tokenizer(sources + targets, vocab_size=1000)
        batch = tokenizer(["hello"], text_target=["hallo"])
    """
    specials = ["<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A BERT-style lower-casing WordPiece tokenizer for an encoder trained from scratch: [CLS] text [SEP]
    (pairs: [CLS] a [SEP] b [SEP], with token type ids), [PAD] id 0, and [MASK] for masking augmentation.

    Example::

        tokenizer = train_wordpiece(train_sentences, vocab_size=1000)
        tokenizer("a sentence", "its pair")
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


TRAINERS = {"byte_level_bpe": train_byte_level_bpe, "seq2seq": train_seq2seq_tokenizer, "wordpiece": train_wordpiece}
