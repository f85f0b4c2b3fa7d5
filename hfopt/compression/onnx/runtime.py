"""load_onnx and OnnxModel: an exported folder in ONNX Runtime, called (and greedily generating) like the model."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch

from ._common import _feed, _position_ids, _read_record, _session, require_onnx

__all__ = ["OnnxModel", "load_onnx"]


class OnnxModel:
    """An exported model in ONNX Runtime sessions, called like the PyTorch model: `model(**batch)` returns an
    output whose `.logits` is a torch tensor, and `generate(...)` decodes greedily (causal LM: the whole
    sequence is run again for each new token, as the graph has no cache; seq2seq: the encoder once, then the
    decoder). `num_parameters` / `num_nonzero_parameters` count the weights stored in the graphs.

    `threads` intra-op threads (default: torch's), one inter-op thread; `spinning=False` lets the threads
    sleep between runs (ONNX Runtime's default is to spin, which is fastest for a server that only runs this
    model, and steals the CPU from anything else in the process).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = True):
        from transformers import AutoConfig, GenerationConfig

        self.path = Path(path)
        self.record = _read_record(self.path)
        self.task = self.record["task"]
        self.config = AutoConfig.from_pretrained(self.path)
        if (self.path / "generation_config.json").is_file():
            self.generation_config = GenerationConfig.from_pretrained(self.path)
        else:
            self.generation_config = GenerationConfig.from_model_config(self.config)
        self.sessions = {name: _session(self.path / name, threads, spinning) for name in self.record["files"]}
        self.input_names = {name: [i.name for i in s.get_inputs()] for name, s in self.sessions.items()}
        self._counts = None

    def __repr__(self) -> str:
        quantization = (self.record.get("quantization") or {}).get("method", "float32")
        return f"OnnxModel({self.record['architecture']}, {self.task}, {quantization}, {self.path})"

    def eval(self) -> OnnxModel:
        return self

    def _run(self, file: str, batch: dict) -> np.ndarray:
        return self.sessions[file].run(None, _feed(self.input_names[file], batch))[0]

    def __call__(self, **batch):
        from transformers.modeling_outputs import CausalLMOutput, Seq2SeqLMOutput, SequenceClassifierOutput

        batch.pop("labels", None)
        if self.task == "seq2seq":
            if batch.get("decoder_input_ids") is None:
                raise ValueError("the ONNX seq2seq model needs decoder_input_ids (or use generate)")
            hidden = self._run("encoder.onnx", batch)
            logits = self._run(
                "decoder.onnx",
                {
                    "decoder_input_ids": batch["decoder_input_ids"],
                    "encoder_hidden_states": hidden,
                    "encoder_attention_mask": _feed(["attention_mask"], batch)["attention_mask"],
                },
            )
            return Seq2SeqLMOutput(logits=torch.from_numpy(logits), encoder_last_hidden_state=torch.from_numpy(hidden))
        logits = torch.from_numpy(self._run("model.onnx", batch))
        if self.task == "classification":
            return SequenceClassifierOutput(logits=logits)
        return CausalLMOutput(logits=logits)

    # --- counting ------------------------------------------------------------------------------------------

    def _count(self) -> tuple[int, int]:
        """Weights stored in the graphs (float and int8 initializers, not the quantizer's scales and zero
        points, nor integer constants such as shapes or position ids)."""
        import onnx
        from onnx import numpy_helper

        if self._counts is None:
            total = nonzero = 0
            for name in self.record["files"]:
                for tensor in onnx.load(str(self.path / name)).graph.initializer:
                    if tensor.name.endswith(("_scale", "_zero_point")) or not tensor.dims:
                        continue
                    value = numpy_helper.to_array(tensor)
                    if value.dtype.kind == "f" or value.dtype in (np.int8, np.uint8):
                        total += value.size
                        nonzero += int(np.count_nonzero(value))
            self._counts = (total, nonzero)
        return self._counts

    @property
    def num_parameters(self) -> int:
        return self._count()[0]

    @property
    def num_nonzero_parameters(self) -> int:
        return self._count()[1]

    # --- generation ----------------------------------------------------------------------------------------

    # A hand-written loop, not transformers' GenerationMixin.generate: that expects a PreTrainedModel (its
    # GenerativePreTrainedModel protocol: device, dtype, main_input_name, a forward whose signature it checks,
    # prepare_inputs_for_generation, a KV cache it creates and slices inputs by, which these no-cache graphs
    # cannot fill) and private helpers (_prepare_special_tokens, _get_logits_processor) that would mean faking
    # one. Its logits processors are transformers' own classes; tests/test_onnx.py compares outputs with generate.
    def generate(
        self,
        input_ids,
        attention_mask=None,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        num_beams: int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Greedy decoding, as `model.generate(..., do_sample=False, num_beams=1)` of the PyTorch model: the
        generation config's limits and logits processors (min/max length, bad words, forced BOS/EOS, suppressed
        tokens, repetition penalty, no-repeat n-grams) apply; sampling and beam search are not offered (a
        generation config that asks for them needs `do_sample=False, num_beams=1` passed).

        Example::

            model.generate(**tokenizer(["one two"], return_tensors="pt"), max_new_tokens=20)
        """
        if self.task == "classification":
            raise ValueError("a classification model does not generate")
        config = copy.deepcopy(self.generation_config)
        do_sample = bool(config.do_sample) if do_sample is None else do_sample
        num_beams = (config.num_beams or 1) if num_beams is None else num_beams
        if do_sample or num_beams != 1:
            raise ValueError(
                f"ONNX models generate greedily only (do_sample=False, num_beams=1), not with do_sample={do_sample}, "
                f"num_beams={num_beams}"
            )
        kwargs.pop("token_type_ids", None)  # from BERT-style tokenizers; a causal LM graph takes none
        unused = config.update(**kwargs)
        unused = {k: v for k, v in unused.items() if v is not None}
        if unused:
            raise ValueError(f"generate() does not take {sorted(unused)} for an ONNX model")
        input_ids = torch.as_tensor(input_ids)
        mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
        if self.task == "seq2seq":
            start = config.decoder_start_token_id
            if start is None:
                start = self.config.decoder_start_token_id
            hidden = self._run("encoder.onnx", {"input_ids": input_ids, "attention_mask": mask})
            tokens = torch.full((len(input_ids), 1), start, dtype=torch.long)
        else:
            tokens = input_ids.long()
        prompt = tokens.shape[1]
        # the length rules of `generate`: max_new_tokens, else the config's max_length (prompt included), else 20
        # new tokens within the model's positions
        max_new_tokens = config.max_new_tokens if max_new_tokens is None else max_new_tokens
        if max_new_tokens is not None:
            max_length = prompt + max_new_tokens
        elif config.max_length is not None:
            max_length = config.max_length
        else:
            max_length = min(prompt + 20, getattr(self.config, "max_position_embeddings", None) or prompt + 20)
        config.max_length = max_length
        eos = config.eos_token_id
        eos = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), dtype=torch.long)
        pad = config.pad_token_id if config.pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
        processors = _logits_processors(config, prompt, eos)
        unfinished = torch.ones(len(tokens), dtype=torch.bool)
        while tokens.shape[1] < max_length:
            if self.task == "seq2seq":
                feed = {"decoder_input_ids": tokens, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
                logits = self._run("decoder.onnx", feed)[:, -1]
            else:
                feed = {"input_ids": tokens, "attention_mask": mask, "position_ids": _position_ids(mask)}
                logits = self._run("model.onnx", feed)[:, -1]
            scores = processors(tokens, torch.from_numpy(logits.astype(np.float32)))
            following = torch.where(unfinished, scores.argmax(-1), torch.tensor(pad))
            tokens = torch.cat([tokens, following[:, None]], 1)
            if self.task != "seq2seq":
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            unfinished &= ~torch.isin(following, eos)
            if not unfinished.any():
                break
        return tokens


def _logits_processors(config, prompt_length: int, eos: torch.Tensor):
    """transformers' logits processors for what a generation config asks of greedy decoding, in the order
    `generate` applies them; a setting this loop does not implement is a ValueError, never ignored."""
    from transformers import (
        ForcedBOSTokenLogitsProcessor,
        ForcedEOSTokenLogitsProcessor,
        LogitsProcessorList,
        MinLengthLogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
        NoBadWordsLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    unsupported = {
        "sequence_bias": config.sequence_bias is not None,
        "encoder_repetition_penalty": config.encoder_repetition_penalty not in (None, 1.0),
        "encoder_no_repeat_ngram_size": bool(config.encoder_no_repeat_ngram_size),
        "exponential_decay_length_penalty": config.exponential_decay_length_penalty is not None,
        "guidance_scale": config.guidance_scale not in (None, 1.0),
    }
    if any(unsupported.values()):
        raise ValueError(f"ONNX greedy decoding does not implement {[k for k, v in unsupported.items() if v]}")
    processors = LogitsProcessorList()
    if config.repetition_penalty not in (None, 1.0):
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(config.bad_words_ids, eos))
    if len(eos) and config.min_length:
        processors.append(MinLengthLogitsProcessor(config.min_length, eos))
    if len(eos) and config.min_new_tokens:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, config.min_new_tokens, eos))
    if config.forced_bos_token_id is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        processors.append(ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id))
    if config.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens))
    if config.begin_suppress_tokens is not None:
        begin = prompt_length if prompt_length > 1 or config.forced_bos_token_id is None else prompt_length + 1
        processors.append(SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin))
    return processors


def load_onnx(path: str | os.PathLike, threads: int | None = None, spinning: bool = True) -> OnnxModel:
    """Load a folder written by export_onnx or quantize_onnx as an `OnnxModel`, called like the PyTorch model.

    Example::

        model = load_onnx("out/onnx/onnx_int8")
        model(**tokenizer(["a fine film"], return_tensors="pt")).logits.argmax(-1)
    """
    require_onnx()
    return OnnxModel(path, threads, spinning)
