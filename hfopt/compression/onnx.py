"""ONNX export and ONNX Runtime inference: export a model (classification, causal LM, seq2seq) with the dynamo
exporter, fuse it for ONNX Runtime, check it against PyTorch, quantize it to int8 (dynamic or static), and load it
back as something called like the model.

Example::

    export_onnx(model, tokenizer, "out/onnx")                       # model.onnx, config, tokenizer, onnx_export.json
    export_onnx(model, tokenizer, "out/plain", optimize=False)      # unfused: what dynamic int8 quantizes best
    quantize_onnx("out/plain", "out/onnx_int8", "dynamic")
    model = load_onnx("out/onnx_int8")
    model(**tokenizer(["a fine film"], return_tensors="pt")).logits  # a torch tensor, as from the PyTorch model
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..run import folder_swap, write_json_atomic
from .quantization import conv1d_to_linear, is_torchao_tensor
from .tasks import detect_task

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORT_RECORD",
    "ONNX_STAGES",
    "OnnxModel",
    "export_onnx",
    "export_stages",
    "load_onnx",
    "quantize_onnx",
    "report_section",
    "require_onnx",
    "stage_names",
    "stage_record",
]

ONNX_STAGES = ("onnx", "onnx_int8", "onnx_int8_static")
EXPORT_RECORD = "onnx_export.json"
# The max abs logit difference an export may have against PyTorch, over max(1, max abs logit): fp32 rounding
# grows with the logits' scale (typical: 1e-6 to 1e-5)
TOLERANCE = 1e-3
PROTOBUF_LIMIT = 2**31  # one .onnx file holds at most 2 GB; larger weights go to an external data file
SAMPLE_TEXTS = (
    "a fine film",
    "the plot is thin, but the acting is strong and the music carries every scene",
    "it was a long day",
)
# The MatMuls reading a GELU output (one of these ops, through a few elementwise ones) keep float weights in
# static int8: the GELU output is long-tailed, and one static scale per tensor clips it (on MiniLM/SST-2,
# quantizing them cost ~10 points of agreement with fp32).
GELU_OPS = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Tanh", "Erf")
ELEMENTWISE_OPS = ("Mul", "Add", "Div", "Pow", "Sqrt", "Cast")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def require_onnx() -> None:
    """Raise an InputError naming the missing package if the onnx extra is not installed."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise InputError(f'the onnx stages need {name}: pip install "hfopt[onnx]"') from None


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Please consider to run pre-processing", "torchvision is not"))


@contextlib.contextmanager
def _quiet():
    """Silence what the exporter and the quantizer print about themselves (missing torchvision, renamed axes,
    deprecations, the advice to pre-process a graph that needs none), nothing else."""
    noise = _DropNoise()
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx._internal.exporter._registration")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.(onnx|_dynamo)")
        warnings.filterwarnings("ignore", category=FutureWarning)
        for logger_ in loggers:
            logger_.addFilter(noise)
        try:
            yield
        finally:
            for logger_ in loggers:
                logger_.removeFilter(noise)


# --- export ----------------------------------------------------------------------------------------------------


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


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the real tokens (what `generate` passes a decoder-only model; left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0) * attention_mask.long()


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


def _session(file: Path, threads: int | None = None, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


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


# --- quantization ----------------------------------------------------------------------------------------------


def _read_record(path: Path) -> dict:
    try:
        return json.loads((path / EXPORT_RECORD).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not a folder written by export_onnx ({EXPORT_RECORD}: {err})") from None


def _feed(names: list[str], batch: dict) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs from a batch (torch tensors or numpy arrays), the optional ones filled in as the
    PyTorch model would: no mask = all tokens, token types 0, positions 0, 1, 2, ..."""

    def array(value):
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return value.astype(np.int64) if value.dtype.kind in "iub" else value

    given = {k: array(v) for k, v in batch.items() if v is not None}
    if "token_type_ids" not in names and given.get("token_type_ids", np.zeros(1)).any():
        raise ValueError("this ONNX model takes no token_type_ids, and the batch has non-zero ones")
    first = given.get("input_ids", given.get("decoder_input_ids"))
    defaults = {
        "attention_mask": lambda: np.ones_like(first),
        "token_type_ids": lambda: np.zeros_like(first),
        "position_ids": lambda: np.broadcast_to(np.arange(first.shape[1], dtype=np.int64), first.shape).copy(),
    }
    feed = {}
    for name in names:
        if name not in given and name not in defaults:
            raise ValueError(f"the ONNX model needs the input '{name}'")
        feed[name] = given[name] if name in given else defaults[name]()
    return feed


def _ffn_down_projections(model_proto) -> list[str]:
    """The MatMuls that read a GELU output: the feed-forward down-projections. GELU is a fused op, or (GPT-2's
    tanh approximation, left unfused) a few elementwise ops around a Tanh or Erf."""
    producer = {output: node for node in model_proto.graph.node for output in node.output}

    def reads_gelu(name: str, depth: int = 0) -> bool:
        node = producer.get(name)
        if node is None or depth > 6:
            return False
        if node.op_type in GELU_OPS:
            return True
        return node.op_type in ELEMENTWISE_OPS and any(reads_gelu(i, depth + 1) for i in node.input)

    return [n.name for n in model_proto.graph.node if n.op_type == "MatMul" and reads_gelu(n.input[0])]


def _quantize_static(source: Path, target: Path, calibration_batches) -> dict:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in _session(source, spinning=False).get_inputs()]
    feeds = [_feed(names, batch) for batch in calibration_batches]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(feeds)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="hfopt-onnx-static-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # symbolic shapes of the dynamo exporter's graphs need auto_merge
        quant_pre_process(str(source), str(prepared), auto_merge=True, save_as_external_data=_is_large(source))
        kept_in_float = _ffn_down_projections(onnx.load(str(prepared), load_external_data=False))
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept_in_float,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=_is_large(source),
        )
    return {"calibration_batches": len(feeds), "float_matmuls_after_gelu": len(kept_in_float)}


def _is_large(file: Path) -> bool:
    return Path(f"{file}.data").exists()


def quantize_onnx(
    path_in: str | os.PathLike,
    path_out: str | os.PathLike,
    method: str = "dynamic",
    calibration_batches=None,
) -> Path:
    """Quantize the ONNX folder `path_in` (written by export_onnx) into `path_out` with ONNX Runtime's quantizer.

    - `dynamic`: int8 weights (one scale per output channel) of every MatMul and embedding table; activations
      quantized on the fly. Best on the unfused graph (`export_onnx(..., optimize=False)`): ONNX Runtime's
      quantizer leaves a fused attention's projections in float (MiniLM: 31 MB instead of 23).
    - `static`: int8 weights (per channel) and uint8 activations with scales calibrated (min/max) on
      `calibration_batches` (a list of tokenized batches, torch or numpy), operator-level int8 MatMuls and
      embeddings; the MatMuls reading a GELU output (the FFN down-projections) stay in float. Classification
      and causal LM graphs.

    Example::

        quantize_onnx("out/onnx", "out/onnx_int8_static", "static", task.metric_batches[:8])
    """
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if method not in ("dynamic", "static"):
        raise ValueError(f"method must be 'dynamic' or 'static', got {method!r}")
    source = Path(path_in)
    record = _read_record(source)
    if record.get("quantization"):
        raise InputError(f"{source} is already quantized ({record['quantization']['method']}): quantize a float one")
    if method == "static":
        if not calibration_batches:
            raise ValueError("static quantization needs calibration_batches (tokenized inputs)")
        if record["task"] == "seq2seq":
            raise InputError("static int8 is for classification and causal LM models; use dynamic for seq2seq")
    with folder_swap(path_out) as staging:
        for item in source.iterdir():
            if item.is_file() and item.name not in record["files"] and not item.name.endswith(".onnx.data"):
                shutil.copy2(item, staging / item.name)
        details = {}
        for name in record["files"]:
            with _quiet():
                if method == "dynamic":
                    quantize_dynamic(
                        str(source / name),
                        str(staging / name),
                        per_channel=True,
                        weight_type=QuantType.QInt8,
                        use_external_data_format=_is_large(source / name),
                    )
                else:
                    details = _quantize_static(source / name, staging / name, calibration_batches)
        record["quantization"] = {"method": method, "weights": "int8 per channel", **details}
        if method == "static":
            record["quantization"]["activations"] = "uint8, min/max calibration"
        write_json_atomic(staging / EXPORT_RECORD, record)
    return Path(path_out)


# --- inference -------------------------------------------------------------------------------------------------


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


# --- the stages of `hfopt compress` ----------------------------------------------------------------------------


def export_stages(
    model: nn.Module,
    tokenizer,
    names,
    folder: str | os.PathLike,
    task: str | None = None,
    calibration_batches=None,
) -> dict[str, Path]:
    """Export `model` once and build the named ONNX stages in `folder/<name>`: `onnx` (fp32, fused for ONNX
    Runtime), `onnx_int8` (dynamic int8 of the unfused graph: faster than of the fused one at batch 16, and
    alike at batch 1), `onnx_int8_static` (static int8 of the fused graph, calibrated on `calibration_batches`).

    Example::

        folders = export_stages(model, tokenizer, ONNX_STAGES, "out/onnx", calibration_batches=batches)
        stages = {name: load_onnx(path, spinning=False) for name, path in folders.items()}
    """
    unknown = sorted(set(names) - set(ONNX_STAGES))
    if unknown:
        raise InputError(f"unknown ONNX stages {unknown}: choose from {', '.join(ONNX_STAGES)}")
    model, task = _prepare(model, task)
    folder = Path(folder)
    graphs = _graphs(model, tokenizer, task, SAMPLE_TEXTS)
    for graph in graphs:
        _torch_export(graph)
    stages = {}
    if "onnx_int8" in names:
        plain = _write_folder(model, tokenizer, task, graphs, folder / ".onnx_plain", False, TOLERANCE)
        stages["onnx_int8"] = quantize_onnx(plain, folder / "onnx_int8", "dynamic")
        shutil.rmtree(plain)
    if "onnx" in names or "onnx_int8_static" in names:
        fused = _write_folder(model, tokenizer, task, graphs, folder / "onnx", True, TOLERANCE)
        if "onnx_int8_static" in names:
            static = quantize_onnx(fused, folder / "onnx_int8_static", "static", calibration_batches)
            stages["onnx_int8_static"] = static
        if "onnx" in names:
            stages["onnx"] = fused
        else:
            shutil.rmtree(fused)
    return {name: stages[name] for name in ONNX_STAGES if name in stages}


def stage_names(requested, task: str) -> list[str]:
    """The ONNX stages of `hfopt compress --onnx [names]`, in their order: for no names, all that the task has
    (static int8 is not offered for seq2seq models, whose decoder calibration would need target texts)."""
    supported = [n for n in ONNX_STAGES if not (task == "seq2seq" and n == "onnx_int8_static")]
    if not requested:
        return supported
    if "onnx_int8_static" in requested and task == "seq2seq":
        raise InputError("onnx_int8_static is for classification and causal_lm models: use --onnx onnx onnx_int8")
    return [n for n in ONNX_STAGES if n in requested]


def report_section(models: dict[str, OnnxModel], exported_from: str, folder, calibration: str | None) -> dict:
    """The compression report's `onnx` entry: where the ONNX stages come from and lie, their calibration, each
    one's export record, and a note on how they were timed."""
    return {
        "exported_from": exported_from,
        "folder": str(folder),
        "calibration": calibration,
        "stages": {name: stage_record(model) for name, model in models.items()},
        "note": f"ONNX stages: exported from {exported_from}, in {folder}; ONNX Runtime with the same threads, one "
        "inter-op thread, and spinning threads off (ONNX Runtime's default is on, which is faster at batch 1 for a "
        "process that runs only that model, but takes the CPU from the stages timed between its runs).",
    }


def stage_record(model: OnnxModel) -> dict:
    """What the compression report records of an ONNX stage: exporter, opset, fusions, the parity of the float
    graph (the stage's own, or the one it was quantized from) and the quantization."""
    record = model.record
    return {
        "exporter": record["exporter"],
        "opset": record["opset"],
        "fusions": record["fusions"],
        "float_graph_parity": record["parity"],
        "quantization": record["quantization"],
    }
