"""Many pipelines on one model, their expensive stages shared: `build_model` runs a config's stages in memory and
keeps only the training stages (a student, recovery, QAT) on disk, in one folder per fingerprint. Another config
with the same stages up to a training stage starts from that stage's folder: a student of depth 3 is distilled
once, then pruned and quantized many ways. A training stage killed midway resumes from its checkpoint.

Example::

    cache = StageCache("out/stages", "runs/teacher", source=source_fingerprint("runs/teacher"))
    model, log = cache.build_model(config, original, tokenizer, "classification", shared_data)
    log   # {'student': 'kept', 'prune_heads': 'ran', 'quantize': 'ran'}
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

from torch import nn

from ..run import folder_swap, list_checkpoints, write_json_atomic
from .config import TRAINING_STAGES, CompressionConfig
from .stages import STAGE_FILE, TRAINING_DIR, Context, apply_stage, shared_work_name

logger = logging.getLogger(__name__)

__all__ = ["StageCache"]


class StageCache:
    """The training stages of many pipelines on one original model, in `folder/<stage>-<fingerprint>/`."""

    def __init__(self, folder: str | Path, model_dir: str, source: str):
        self.folder = Path(folder)
        self.model_dir = model_dir
        self.source = source  # the original model's fingerprint: the first link of every stage's fingerprint

    def plan(self, config: CompressionConfig) -> dict[str, str]:
        """Each stage's fingerprint (the previous stage's, its settings, its files' content, the versions)."""
        from .runner import _fingerprints

        return _fingerprints([n for n in config.stage_names() if n != "onnx"], config, self.source)

    def build_model(self, config: CompressionConfig, original: nn.Module, tokenizer, task_name: str,
                    shared_data: dict, callbacks=()) -> tuple[nn.Module, dict[str, str]]:  # fmt: skip
        """The PyTorch model `config`'s stages make of `original` (its ONNX stages are left to the caller), and
        per stage whether it "ran", was "resumed" from a checkpoint, or was "kept" (loaded from the cache)."""
        from ..compression.io import load_compressed, save_compressed

        names = [n for n in config.stage_names() if n != "onnx"]
        plan = self.plan(config)
        ctx = Context(config, task_name, tokenizer, original, self.model_dir, self.folder / TRAINING_DIR,
                      list(callbacks), plan, _data=shared_data, shared_training=True)  # fmt: skip
        start, log = self._kept(names, plan), {}
        if start:  # the last training stage already on disk
            model = load_compressed(self._folder(names[start - 1], plan[names[start - 1]])).cpu().eval()
            log.update({n: "kept" for n in names[:start]})
        else:
            model = copy.deepcopy(original).cpu()  # the original stays as it is: the teacher
            model.requires_grad_(True)  # distillation froze the original as a teacher; the copy trains and is scored
        for name in names[start:]:
            begin = time.perf_counter()
            work = ctx.training_work_dir(name)
            resumed = work.is_dir() and bool(list_checkpoints(work))  # a checkpoint to resume from
            model, info = apply_stage(name, model, ctx)
            log[name] = "resumed" if resumed and name in TRAINING_STAGES else "ran"
            if name in TRAINING_STAGES:
                with folder_swap(self._folder(name, plan[name])) as staging:
                    save_compressed(model, staging, tokenizer)
                    record = {"fingerprint": plan[name], "stage": name, **info,
                              "seconds": time.perf_counter() - begin}  # fmt: skip
                    write_json_atomic(staging / STAGE_FILE, record)
                ctx.remove_training_work(name)
        return model.cpu().eval(), log

    def to_train(self, config: CompressionConfig) -> dict[str, float]:
        """The training stages `build_model(config)` would run (those after the last one on disk), each with the
        fraction of its steps still to train (less than 1 when it resumes from a checkpoint)."""
        names = [n for n in config.stage_names() if n != "onnx"]
        plan = self.plan(config)
        return {n: self._left(n, plan[n]) for n in names[self._kept(names, plan) :] if n in TRAINING_STAGES}

    def seconds_per_epoch(self) -> dict[str, float]:
        """Per training stage name, the most seconds an epoch took in the stages on disk that trained from the
        start (not resumed): what `to_train` stages may be expected to take. The slowest, not a typical one: a
        less pruned model trains slower than a more pruned one, and an estimate that runs short lets a search
        outlast its time budget."""
        paces: dict[str, list[float]] = {}
        for path in self.folder.glob(f"*/{STAGE_FILE}"):
            try:
                record = json.loads(path.read_text())
                training = record["training"]
                pace = float(record["seconds"]) / float(training["epochs"])
            except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
                continue
            if not training.get("resumed_from") and math.isfinite(pace) and pace > 0:
                paces.setdefault(record.get("stage"), []).append(pace)
        return {name: max(values) for name, values in paces.items()}

    def _left(self, name: str, fp: str) -> float:
        """1 − the newest checkpoint's share of the stage's steps (1.0 without one, or one that cannot tell)."""
        checkpoints = list_checkpoints(self.folder / TRAINING_DIR / shared_work_name(name, fp))
        try:
            state = json.loads((checkpoints[-1][1] / "trainer_state.json").read_text())
            return min(1.0, max(0.0, 1.0 - state["global_step"] / state["max_steps"]))
        except (IndexError, OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return 1.0

    def _kept(self, names: list[str], plan: dict[str, str]) -> int:
        """How many of `names` the last training stage on disk stands for (0: none is)."""
        for index in reversed(range(len(names))):
            name = names[index]
            if name in TRAINING_STAGES and _fingerprint(self._folder(name, plan[name])) == plan[name]:
                return index + 1
        return 0

    def _folder(self, name: str, fp: str) -> Path:
        return self.folder / f"{name}-{fp}"


def _fingerprint(folder: Path) -> str | None:
    try:
        return json.loads((folder / STAGE_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None
