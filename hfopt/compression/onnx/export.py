"""export_onnx: a PyTorch model to an ONNX folder (graphs fused for ONNX Runtime), checked against PyTorch."""

from __future__ import annotations

import copy
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...run import folder_swap, write_json_atomic
from ..quantization import conv1d_to_linear, is_torchao_tensor
from ..tasks import detect_task
from ._common import EXPORT_RECORD, _position_ids, _quiet, _session, require_onnx

logger = logging.getLogger(__name__)

__all__ = ["PROTOBUF_LIMIT", "SAMPLE_TEXTS", "TOLERANCE", "export_onnx"]

# The max abs logit difference an export may have against PyTorch, over max(1, max abs logit): fp32 rounding
# grows with the logits' scale (typical: 1e-6 to 1e-5)
TOLERANCE = 1e-3
PROTOBUF_LIMIT = 2**31  # one .onnx file holds at most 2 GB; larger weights go to an external data file
SAMPLE_TEXTS = (
    "a fine film",
    "the plot is thin, but the acting is strong and the music carries every scene",
    "it was a long day",
)
_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class _Logits(nn.Module):
    """The model as a graph: token inputs in, logits out (no cache, no ModelOutput)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.no_cache = "use_cache" in inspect.signature(model.forward).parameters

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids, "position_ids": position_ids}
        kwargs = {k: v for k, v in given.items() if v is not None}
        if self.no_cache:
            kwargs["use_cache"] = False
        return self.model(input_ids=input_ids, **kwargs).logits


class _Encoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _Decoder(nn.Module):
    """The decoder and the output head (bias, scaling: whatever the model's forward does), without a cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask):
        from transformers.modeling_outputs import BaseModelOutput

        return self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states),
            attention_mask=encoder_attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        ).logits


@dataclass
class _Graph:
    """One graph to export: the module, its example inputs (by name), their dynamic axes, its output, and the
    positions the parity check compares (a mask over the output's first two axes, or None for all)."""

    file: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    axes: dict[str, dict[int, str]]
    output: str
    compare: torch.Tensor | None = None
    reference: np.ndarray | None = None
    program: object = field(default=None, repr=False)


def _check_exportable(model: nn.Module) -> None:
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    if any(isinstance(m, (QLinear, QEmbedding)) for m in model.modules()):
        raise InputError(
            "a torch.ao int8 model cannot be exported to ONNX: export the float model, then quantize_onnx "
            "(the onnx_int8 stage)"
        )
    tensors = list(model.parameters()) + list(model.buffers())
    if any(is_torchao_tensor(t) for t in tensors):
        raise InputError("a torchao int8 model cannot be exported to ONNX: export the float model, then quantize_onnx")
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if dtypes - {torch.float32}:
        raise InputError(
            f"export_onnx needs a float32 model, this one has {sorted(map(str, dtypes))} weights: export the "
            "float model (quantize the ONNX model with quantize_onnx)"
        )


def _max_length(config) -> int:
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 66
    return max(4, min(64, positions - 2))


def _sample_batch(tokenizer, config, texts, max_length: int) -> dict[str, torch.Tensor]:
    """Token ids and a mask for the parity check, right-padded (rows of different lengths); random ids when no
    tokenizer is given."""
    if tokenizer is None:
        g = torch.Generator().manual_seed(0)
        lengths = [min(12, max_length), min(7, max_length), min(3, max_length)]
        ids = torch.randint(0, config.vocab_size, (len(lengths), max(lengths)), generator=g)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if getattr(config, "type_vocab_size", 0):  # BERT-like: no token types means all 0
            batch["token_type_ids"] = torch.zeros_like(ids)
        return batch
    tokenizer = copy.copy(tokenizer)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _graphs(model: nn.Module, tokenizer, task: str, texts) -> list[_Graph]:
    """What to export for a task, with example inputs and the PyTorch reference outputs."""
    batch = _sample_batch(tokenizer, model.config, texts, _max_length(model.config))
    mask = batch["attention_mask"].bool()
    if task == "seq2seq":
        start = model.generation_config.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError("this seq2seq model has no decoder_start_token_id in its config")
        source = batch["input_ids"]
        target = torch.cat([torch.full_like(source[:, :1], start), source.flip(1)[:, : max(2, source.shape[1] - 1)]], 1)
        encoder, decoder = _Encoder(model).eval(), _Decoder(model).eval()
        with torch.inference_mode():
            hidden = encoder(source, batch["attention_mask"])
            logits = decoder(target, hidden, batch["attention_mask"])
        source_axes = {0: "batch", 1: "source_sequence"}
        return [
            _Graph(
                "encoder.onnx",
                encoder,
                {"input_ids": source, "attention_mask": batch["attention_mask"]},
                {"input_ids": source_axes, "attention_mask": source_axes},
                "last_hidden_state",
                mask,
                hidden.numpy(),
            ),
            _Graph(
                "decoder.onnx",
                decoder,
                {
                    "decoder_input_ids": target,
                    "encoder_hidden_states": hidden,
                    "encoder_attention_mask": batch["attention_mask"],
                },
                {
                    "decoder_input_ids": {0: "batch", 1: "target_sequence"},
                    "encoder_hidden_states": source_axes,
                    "encoder_attention_mask": source_axes,
                },
                "logits",
                None,
                logits.numpy(),
            ),
        ]
    accepted = inspect.signature(model.forward).parameters
    if task == "causal_lm":
        # positions as `generate` counts them (left padding); no token types (to GPT-2, zeros are not "none")
        batch.pop("token_type_ids", None)
        if "position_ids" in accepted:
            batch["position_ids"] = _position_ids(batch["attention_mask"])
    inputs = {name: batch[name] for name in _INPUTS if name in batch and name in accepted}
    wrapper = _Logits(model).eval()
    with torch.inference_mode():
        reference = wrapper(**inputs).numpy()
    return [
        _Graph(
            "model.onnx",
            wrapper,
            inputs,
            {name: {0: "batch", 1: "sequence"} for name in inputs},
            "logits",
            mask if task == "causal_lm" else None,
            reference,
        )
    ]


def _torch_export(graph: _Graph) -> None:
    dims = {}
    dynamic_shapes = {
        name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.items()}
        for name, axes in graph.axes.items()
    }
    with _quiet():
        graph.program = torch.onnx.export(
            graph.module,
            (),
            kwargs=graph.inputs,
            dynamo=True,
            input_names=list(graph.inputs),
            output_names=[graph.output],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )


def _save(ir_model, file: Path) -> None:
    """Save an ONNX IR model: one file, or the graph plus `<file>.data` above the 2 GB protobuf limit."""
    import onnx_ir as ir

    weights = sum(v.const_value.nbytes for v in ir_model.graph.initializers.values() if v.const_value is not None)
    ir.save(ir_model, file, external_data=f"{file.name}.data" if weights > PROTOBUF_LIMIT * 0.9 else None)


def _fuse(ir_model) -> dict[str, int]:
    """onnxscript's fusions for ONNX Runtime (attention, bias + GELU, skip + layer norm, ...), in place; the
    counts of those applied. (ORT's own optimizer does not fuse attention in the dynamo exporter's graphs and
    sets one head count for all layers, which head-pruned models do not have.)"""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    _, counts = optimize_for_ort(ir_model)
    return {name: int(count) for name, count in counts.items() if count}


def _parity(folder: Path, graphs: list[_Graph]) -> tuple[float, float]:
    """(max abs difference between the ONNX Runtime outputs and the PyTorch ones, max abs PyTorch output), over
    real tokens only; of the graph whose difference is the largest against its outputs' scale."""
    worst = (0.0, 0.0)
    for graph in graphs:
        feed = {name: value.numpy() for name, value in graph.inputs.items()}
        got = _session(folder / graph.file, spinning=False).run(None, feed)[0].astype(np.float32)
        reference = graph.reference
        if graph.compare is not None:
            got, reference = got[graph.compare.numpy()], reference[graph.compare.numpy()]
        found = (float(np.abs(got - reference).max()), float(np.abs(reference).max()))
        if found[0] / max(1.0, found[1]) >= worst[0] / max(1.0, worst[1]):
            worst = found
    return worst


def _write_folder(model, tokenizer, task, graphs, path, optimize, tolerance) -> Path:
    """Save the exported graphs (fused or not), config, generation config, tokenizer and the record; fail with
    no folder written if the graphs do not match PyTorch."""
    import onnx_ir as ir

    path = Path(path)
    with folder_swap(path) as staging:
        fusions = {}
        for graph in graphs:
            ir_model = ir.from_proto(ir.to_proto(graph.program.model))  # the program keeps the plain graph
            if optimize:
                for name, count in _fuse(ir_model).items():
                    fusions[name] = fusions.get(name, 0) + count
            ir.passes.common.ClearMetadataAndDocStringPass()(ir_model)  # the exporter's per-node stack traces
            _save(ir_model, staging / graph.file)
        difference, scale = _parity(staging, graphs)
        if not difference <= tolerance * max(1.0, scale):
            raise RuntimeError(
                f"the ONNX export of {type(model).__name__} does not match PyTorch: max abs logit difference "
                f"{difference:.2e} > {tolerance:.0e} × max(1, max abs logit {scale:.2g}) (nothing was written to "
                f"{path})"
            )
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]
        config.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None and task != "classification":
            model.generation_config.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        opset = next((v for d, v in graphs[0].program.model.opset_imports.items() if d in ("", "ai.onnx")), None)
        record = {
            "format": "hfopt-onnx/1",
            "task": task,
            "architecture": type(model).__name__,
            "files": [g.file for g in graphs],
            "inputs": {g.file: list(g.inputs) for g in graphs},
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "opset": opset,
            "optimized": bool(optimize),
            "fusions": fusions,
            "parity": {
                "max_abs_logit_difference": difference,
                "max_abs_logit": scale,
                "tolerance": tolerance,  # of the difference over max(1, max abs logit)
                "examples": int(graphs[0].inputs[next(iter(graphs[0].inputs))].shape[0]),
                "padded": True,
            },
            "quantization": None,
        }
        write_json_atomic(staging / EXPORT_RECORD, record)
    logger.info("exported %s to %s (max abs logit difference %.1e)", type(model).__name__, path, difference)
    return path


def _prepare(model: nn.Module, task: str | None) -> tuple[nn.Module, str]:
    """A float32 CPU copy of the model in eval mode (GPT-2's Conv1D as Linear), and its task."""
    require_onnx()
    _check_exportable(model)
    if task is None:
        task = detect_task(SimpleNamespace(architectures=[type(model).__name__]))
    model = copy.deepcopy(model).cpu().eval()
    model.config = copy.deepcopy(model.config)
    conv1d_to_linear(model)  # Conv1D exports as Gemm, which the attention fusions do not match
    return model, task


def export_onnx(
    model: nn.Module,
    tokenizer,
    path: str | os.PathLike,
    task: str | None = None,
    optimize: bool = True,
    sample_texts=None,
    tolerance: float = TOLERANCE,
) -> Path:
    """Export `model` (float32; pruned ones too) to an ONNX folder: `model.onnx` (classification and causal LM:
    logits, no cache) or `encoder.onnx` + `decoder.onnx` (seq2seq), with dynamic batch and sequence axes, fused
    for ONNX Runtime when `optimize`; plus config.json, the tokenizer and `onnx_export.json` (exporter, opset,
    fusions, and the parity check: the max abs logit difference against PyTorch on padded sample inputs, which
    must be ≤ `tolerance` × max(1, max abs logit), else nothing is written). The caller's model is not changed.
    `task` defaults to the one of the model's class; `tokenizer` may be None (random token ids make the sample
    inputs). Weights above the 2 GB protobuf limit go to `model.onnx.data` beside the graph.

    Example::

        export_onnx(model, tokenizer, "out/onnx")
        load_onnx("out/onnx")(**tokenizer(["a fine film"], return_tensors="pt")).logits
    """
    model, task = _prepare(model, task)
    graphs = _graphs(model, tokenizer, task, sample_texts or SAMPLE_TEXTS)
    for graph in graphs:
        _torch_export(graph)
    return _write_folder(model, tokenizer, task, graphs, path, optimize, tolerance)
