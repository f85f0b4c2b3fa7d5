"""`optimize()`: the fastest (or smallest) compressed model within an accuracy budget, found by optuna over the
compression pipeline's stages. Trials are kept in `OUT/optimize.journal`, so a killed search resumes with every
finished trial; the training stages live in `OUT/stages/` by fingerprint and are reused by every trial that
shares them; the chosen model goes to `OUT/model` with its report on the eval file the search never saw.

Example::

    result = optimize("runs/teacher", OptimizeConfig(train_file="train.tsv", eval_file="dev.tsv", max_drop=0.01,
                                                     max_trials=30), "runs/optimized")
    result.chosen["speedup_b16"], result.files["model"]
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

from ..errors import InputError
from ..pipeline import CompressionConfig
from ..pipeline.config import AUGMENTATION, DISTILLING_SETTINGS, TRAINING_STAGES
from ..run import RunLock, write_json_atomic
from ..run.output_dir import check_apart
from .config import OptimizeConfig, shared_settings
from .outputs import CANDIDATES, RATIO, TRIAL_FILE, OptimizeResult, finish, write_trials
from .selection import carve_selection, screening_file
from .trials import Setup, deployment_choices, metric_of_rows, run_trial, selection_rows

logger = logging.getLogger(__name__)

__all__ = ["OptimizeResult", "optimize"]  # OptimizeResult: outputs'

JOURNAL = "optimize.journal"
STATE_FILE = "optimize_state.json"  # the search's time spent over all its runs
MAX_REPEATS = 25  # trials in a row drawing models made before: the space is explored, the search ends
MAX_REFUSALS = 5  # draws in a row whose training would outlast the time left: only such trials are left, it ends
STOPPED = "stopped"  # a trial's attribute: it was running when the search stopped; it runs again
MAX_STOPS = 3  # a trial running each time its search stopped this often is failed (it kills the process?)


def _set_constraint() -> bool:
    """Whether trials carry their constraints (optuna ≥ 5); older samplers take a constraints_func."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def optimize(model_dir: str, config: OptimizeConfig, output_dir: str | Path, *, callbacks=(),
             progress: bool = True) -> OptimizeResult:  # fmt: skip
    """Search `config`'s space for the model of `model_dir` that best meets `config.objective` within the
    budget on the selection data; write OUT/model (the chosen model and its report on `config.eval_file`),
    OUT/trials.{csv,json}, OUT/optimize.{md,png}. `callbacks` go to the Trainer of every training stage."""
    import torch
    from transformers import AutoConfig

    from ..compression.tasks import detect_task
    from ..models import check_model_source
    from ..pipeline import load_source
    from ..pipeline.cache import StageCache
    from ..pipeline.fingerprint import fingerprint, pipeline_source, source_fingerprint
    from ..pipeline.stages import Context, load_teacher

    try:
        import optuna  # noqa: F401
    except ImportError:
        raise InputError('hfopt optimize searches with optuna: pip install "hfopt[hpo]"') from None
    output = Path(output_dir)
    check_apart(output, {"model_dir": model_dir, "--train_file": config.train_file,
                         "--selection_file": config.selection_file, "--eval_file": config.eval_file,
                         "pipeline: teacher": config.pipeline.get("teacher"),
                         "pipeline: tokenizer_name": config.pipeline.get("tokenizer_name")})  # fmt: skip
    if output.exists() and not output.is_dir():
        raise InputError(f"--output_dir {output} is a file, not a folder")
    check_model_source(model_dir, "model_dir")
    model_config = AutoConfig.from_pretrained(model_dir)
    task_name = detect_task(model_config)
    probe = _pipeline_config(config, config.train_file, config.eval_file)
    settings = {k: v for k, v in config.pipeline.items() if k != "augment_stages"}  # (checked with the space)
    training_probe = CompressionConfig(**settings, qat="distill", train_file=config.train_file)  # every pipeline:
    training_probe.check_task(task_name)  # setting, as a trial that trains takes it (QAT stands in for its stages)
    num_layers = _num_layers(model_config)
    space = config.search_space.resolved(task_name, num_layers, _onnx_available())
    if config.threads:
        torch.set_num_threads(config.threads)
    original, tokenizer, task_name = load_source(model_dir, task_name, config.pipeline.get("tokenizer_name"))
    training_probe.check_tokenizer(tokenizer)
    space = _check_space(space, config, tokenizer)
    if not _space_training(space, distilling=True):
        for name in DISTILLING_SETTINGS:
            if config.pipeline.get(name):
                raise InputError(f"pipeline: {name} is for the trials that distil, and the space has none (give "
                                 "space: student_layers, recover: distill with some pruning, or quantize: qat with "
                                 "backend pytorch)")  # fmt: skip
    augmented = [name for name in AUGMENTATION if config.pipeline.get(name)]
    if augmented and not _space_training(space):
        raise InputError(f"pipeline: {augmented[0]} is for the trials that train, and the space has none (give "
                         "space: student_layers, recover with some pruning, or quantize: qat with backend "
                         "pytorch)")  # fmt: skip
    chosen = config.pipeline.get("augment_stages")
    if chosen is not None and not set(chosen) & _space_training(space):
        raise InputError(f"pipeline: augment_stages lists {', '.join(chosen)}, which no trial of the space trains")
    shared: dict = {}
    ctx = Context(probe, task_name, tokenizer, original, model_dir, output, _data=shared)
    if config.pipeline.get("teacher"):  # loaded and checked before any work; the trials that distil share it
        teacher = config.pipeline["teacher"]
        shared["teacher"] = load_teacher(teacher, task_name, probe.tokenizer_name, tokenizer, original, model_dir,
                                         config.pipeline.get("hidden_loss_weight", 0.0))  # fmt: skip
    eval_task = ctx.data(config.eval_file, "eval_file", probe.max_eval_samples)  # the data fits, before any work
    ctx.data(config.train_file, "train_file", probe.max_train_samples)
    output.mkdir(parents=True, exist_ok=True)
    RunLock.acquire(output)
    train_file, selection_file = carve_selection(config, task_name, output / "data")
    selection = ctx.data(selection_file, "selection_file", probe.max_eval_samples)
    ctx.data(train_file, "train_file", probe.max_train_samples)
    screen = _screening_rows(ctx, selection, selection_file, config, output / "data")
    calibration = ctx.data(train_file, "calibration_file", 128) if "onnx_int8_static" in space["backend"] else None
    headline, higher = selection.headline
    budget, relative = config.budget
    original_rows = selection_rows(selection, headline, original)  # for the trials' paired standard errors
    if original_rows is None:
        original_metric = selection.evaluate(original)[headline]
    else:
        original_metric = metric_of_rows(headline, original_rows)
    source = pipeline_source(model_dir, probe.tokenizer_name)
    setup = Setup(
        original=original, tokenizer=tokenizer, task_name=task_name, base=dict(config.pipeline),
        train_file=train_file, selection_file=selection_file, selection=selection, screen=screen,
        calibration=calibration, cache=StageCache(output / "stages", model_dir, source), shared_data=shared,
        headline=headline, higher_is_better=higher, original_selection=original_metric, original_rows=original_rows,
        original_screen=screen.evaluate(original)[headline] if screen else None,
        original_size=_size(original, tokenizer, model_dir, output), budget=budget, relative=relative,
        repeats=probe.latency_repeats, threads=config.threads,
        work=output / ".trial", callbacks=tuple(callbacks),
    )  # fmt: skip
    if not setup.original_selection or not math.isfinite(setup.original_selection):
        raise InputError(f"the original model's {headline} on the selection data is {setup.original_selection}")
    rows = len(selection.texts)
    if headline in ("accuracy", "f1") and not relative and 1 / rows > budget:
        logger.warning(
            "The selection data has %d rows: one row is %.3f of %s, more than the budget (%g); the choice may lose "
            "more than the budget on other data (give a larger --selection_file or --selection_fraction).",
            rows, 1 / rows, headline, budget,
        )  # fmt: skip
    study_name = "optimize-" + fingerprint({
        "source": source, "train": source_fingerprint(train_file), "selection": source_fingerprint(selection_file),
        "pipeline": config.pipeline, "space": space, "budget": config.budget, "objective": config.objective,
        "screen": config.screen_fraction, "threads": config.threads,
        **({"teacher": source_fingerprint(config.pipeline["teacher"])} if config.pipeline.get("teacher") else {}),
    })  # fmt: skip
    state = _read_state(output, study_name)
    study = _open_study(output, study_name, config, higher)
    choices = {**{k: v for k, v in space.items() if k not in ("quantize", "backend")},
               "deployment": deployment_choices(space)}  # fmt: skip
    write_json_atomic(output / STATE_FILE, {"elapsed": state["elapsed"], "study": study_name})
    _kept_as_journal(study, setup, output, state, config)
    _loop(study, setup, choices, config, output, state, study_name, progress)
    rows = _rows(study)
    write_trials(rows, output)
    return finish(rows, setup, eval_task, config, output, state, space)


def _loop(study, setup: Setup, choices: dict, config: OptimizeConfig, output: Path, state: dict, study_name: str,
          progress: bool) -> None:  # fmt: skip
    """Ask, run and tell trials until max_trials are done or the time budget is spent."""
    import optuna
    from tqdm.auto import tqdm

    done = _ended(study)
    start, before = time.monotonic(), state["elapsed"]
    bar = tqdm(total=config.max_trials, initial=len(done), desc="optimize", unit="trial", disable=not progress)
    by_key = {t.user_attrs["row"]["key"]: t.user_attrs["row"] for t in done if "key" in t.user_attrs["row"]}
    repeats = 0  # trials in a row that drew a model made before
    refused: list[dict] = []  # drawn trials whose training would outlast the time left, in the order drawn
    refusals = 0  # such draws in a row
    queued = False
    try:
        while True:
            spent = before + time.monotonic() - start
            if config.max_trials is not None and len(done) >= config.max_trials:
                break
            if config.seconds is not None and spent >= config.seconds:
                logger.info("The time budget (%s) is spent: no new trial starts.", config.time_budget)
                break
            if repeats >= MAX_REPEATS:
                logger.info("The last %d trials drew models made before: the search space is explored.", repeats)
                break
            if refusals >= MAX_REFUSALS:
                logger.info("The last %d draws would train longer than the %.0f min left of the time budget: no new "
                            "trial starts.", refusals, max(config.seconds - spent, 0.0) / 60)  # fmt: skip
                break
            if not queued:  # a resumed search: the deployments a stop between a trial and its queue left out
                for ended in done:
                    _enqueue_deployments(study, setup, ended.user_attrs["row"], choices["deployment"], by_key)
                queued = True
            trial = study.ask()
            params = {name: trial.suggest_categorical(name, values) for name, values in choices.items()}
            if config.seconds is not None and not _fits(setup, params, by_key, config.seconds - spent, trial.number):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # no row: not a trial of the table
                if params not in refused:
                    refused.append(params)
                refusals += 1
                continue  # a later draw may train less, or nothing (a model made before, deployed another way)
            refusals = 0
            if params in refused:  # refused earlier, it fits now (a faster pace of its stages since)
                refused.remove(params)
            try:
                row = _run_or_reuse(setup, params, by_key)
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as err:  # a combination the stages cannot make: recorded, and the search goes on
                logger.warning("Trial %d failed: %s", trial.number, str(err).splitlines()[0] if str(err) else err)
                row = {"params": params, "status": "failed", "error": f"{type(err).__name__}: {err}"[:500]}
            finally:
                setup.original.cpu().eval()  # a distillation stage may have moved the teacher to an accelerator
            repeats = repeats + 1 if row.get("same_as") is not None else 0
            row["trial"] = trial.number
            row["seconds"] = time.monotonic() - start - (spent - before)
            trial.set_user_attr("row", row)
            if row["status"] == "failed":
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                trial.set_user_attr("constraint", row["constraint"])
                if _set_constraint():  # optuna ≥ 5: the sampler reads the trial's constraints
                    trial.set_constraint("budget", row["constraint"])
                by_key.setdefault(row["key"], row)
                if row["status"] == "complete":
                    study.tell(trial, _values(row, config))
                else:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                _keep_candidate(setup, row, output, state, config)  # after the journal has it: see _kept_as_journal
                _enqueue_deployments(study, setup, row, choices["deployment"], by_key)
            shutil.rmtree(setup.work, ignore_errors=True)
            done.append(trial)
            state["elapsed"] = before + time.monotonic() - start
            write_json_atomic(output / STATE_FILE, {"elapsed": state["elapsed"], "study": study_name})
            write_trials(_rows(study), output)
            bar.update(1)
            bar.set_postfix_str(_progress_line(state, config), refresh=True)
    finally:  # a search stopped by Ctrl-C keeps them too
        bar.close()
        for params in refused:  # asked first, in the order drawn, when the search resumes with more time
            study.enqueue_trial(params)


def _fits(setup: Setup, params: dict, by_key: dict, left: float, number: int) -> bool:
    """Whether the trial's training is expected to end within the `left` seconds of the budget (a trial that
    trains nothing, or the search's first training, which has no pace to go by, always does)."""
    from .trials import training_estimate, trial_config

    try:
        if trial_config(setup, params)[2] in by_key:
            return True
        estimate = training_estimate(setup, params)
    except Exception:  # settings the stages cannot make: the trial runs, and is recorded as failed
        return True
    if estimate is None or estimate <= left:
        return True
    logger.info("Trial %d would train about %.0f min (at the pace of the slowest stage of its kind so far), more "
                "than the %.0f min left of the time budget: it does not start (it runs first if the search resumes "
                "with more time).", number, estimate / 60, max(left, 0.0) / 60)  # fmt: skip
    return False


def _enqueue_deployments(study, setup: Setup, row: dict, deployments: list[str], by_key: dict) -> None:
    """A trial that trained a stage (minutes) and came within twice the budget: its model's other deployments
    that train nothing (seconds each, and within a fraction of a point of each other; not QAT) are the next
    trials, before the sampler draws new training. Trials already run, failed or queued are not queued again (a
    resumed search calls this for every ended trial)."""
    from optuna.trial import TrialState

    from .trials import trial_config

    trained = any(how in ("ran", "resumed") for name, how in row.get("stages", {}).items() if name in TRAINING_STAGES)
    if not trained or row["status"] != "complete" or row["constraint"] > setup.budget:
        return
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    queued = {trial_config(setup, t.system_attrs.get("fixed_params", t.params))[2] for t in waiting}  # enqueued
    failed = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
              if t.user_attrs.get("row", {}).get("status") == "failed"]  # no key: may not build  # fmt: skip
    for deployment in deployments:
        if deployment == "pytorch:qat":  # quantization-aware training: minutes, as a drawn trial
            continue
        params = {**row["params"], "deployment": deployment}
        if params in failed:
            continue
        key = trial_config(setup, params)[2]
        if key not in by_key and key not in queued:
            study.enqueue_trial(params)
            queued.add(key)


def _run_or_reuse(setup: Setup, params: dict, by_key: dict) -> dict:
    """A trial's row: run, or the figures of an earlier trial that made the same model (same key)."""
    from .trials import trial_config

    _, _, key = trial_config(setup, params)
    if key in by_key:
        earlier = by_key[key]
        return {**earlier, "params": params, "same_as": earlier.get("same_as", earlier.get("trial")),
                "stages": {name: "kept" for name in earlier.get("stages", {})}}  # fmt: skip
    return run_trial(setup, params)


def _values(row: dict, config: OptimizeConfig) -> list[float]:
    if config.objective == "pareto":
        return [row["metric"], row["latency_b1_ms"], row["latency_b16_ms"], float(row["size_bytes"])]
    return [1.0 / row[RATIO[config.objective]]]  # relative to the original, timed beside it: steady for hours


def _open_study(output: Path, name: str, config: OptimizeConfig, higher: bool):
    """The search's optuna study in OUT/optimize.journal: a constrained TPE (within the budget first), one
    objective or all four (pareto); trials a killed run left RUNNING are failed and asked again before new draws
    (recorded as failed once the search stopped MAX_STOPS times while they ran)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(output / JOURNAL)))
    pareto = config.objective == "pareto"
    directions = ["maximize" if higher else "minimize", "minimize", "minimize", "minimize"] if pareto else ["minimize"]
    study = optuna.create_study(study_name=name, storage=storage, sampler=_sampler(config, 0), directions=directions,
                                load_if_exists=True)  # fmt: skip
    if study.trials:  # a resumed search: a sampler seeded as the first run's would draw its first trials again
        study.sampler = _sampler(config, len(study.trials))
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        stops = 1 + sum(t.user_attrs.get(STOPPED, False) and t.params == trial.params for t in study.trials)
        if stops >= MAX_STOPS:  # killed for memory, a crash in a native library: not asked again
            logger.warning("Trial %d was running each of the %d times the search stopped: recorded as failed.",
                           trial.number, stops)  # fmt: skip
            row = {"params": trial.params, "status": "failed", "trial": trial.number,
                   "error": f"the search stopped {stops} times while this trial ran (killed for memory?)"}  # fmt: skip
            study._storage.set_trial_user_attr(trial._trial_id, "row", row)
        else:
            logger.info("Trial %d was stopped midway: it runs again before new draws (its finished stages are kept).",
                        trial.number)  # fmt: skip
            study._storage.set_trial_user_attr(trial._trial_id, STOPPED, True)  # its row, if any, is not counted
            study.enqueue_trial(trial.params)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return study


def _sampler(config: OptimizeConfig, trials_before: int):
    """Constrained TPE (trials within the budget preferred), seeded by the pipeline's seed and the trials the
    study already holds."""
    import optuna

    constraints = {"constraints_func": lambda t: [t.user_attrs.get("constraint", math.inf)]}
    if _set_constraint():
        constraints = {}
    return optuna.samplers.TPESampler(
        seed=config.pipeline.get("seed", 42) + trials_before,
        n_startup_trials=min(10, config.max_trials or 10),
        multivariate=True,
        **constraints,
    )


def _slot(row: dict, state: dict, config: OptimizeConfig) -> str | None:
    """Where an ended trial's model is kept: "best" while it is the best within the budget, "closest" while none
    is and it is the closest to the budget (a trial screened out counts with its loss on the screening rows);
    None: not kept (or an earlier trial's model, kept or not then)."""
    from .outputs import better

    if "same_as" in row or row["status"] == "failed":
        return None
    slot = "best" if row["status"] == "complete" and row["constraint"] <= 0 else "closest"
    if slot == "closest" and state.get("best") is not None:
        return None
    current = state.get(slot)
    return slot if current is None or better(row, current, config, slot) else None


def _keep_candidate(setup: Setup, row: dict, output: Path, state: dict, config: OptimizeConfig) -> None:
    """Keep the trial's model (in `setup.work`) in OUT/.best or OUT/.closest when `_slot` says so."""
    slot = _slot(row, state, config)
    if slot is None:
        return
    target = output / CANDIDATES[slot]
    write_json_atomic(setup.work / "model" / TRIAL_FILE, row)  # the kept model says which trial it is
    aside = target.with_name(target.name + ".old")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)  # never a moment without a kept model: swapped by renames
    (setup.work / "model").rename(target)
    shutil.rmtree(aside, ignore_errors=True)
    state[slot] = row
    if slot == "best":
        shutil.rmtree(output / CANDIDATES["closest"], ignore_errors=True)
        state["closest"] = None


def _kept_as_journal(study, setup: Setup, output: Path, state: dict, config: OptimizeConfig) -> None:
    """Make the kept models the ones the journal's trials call for. A trial is told to the journal before its
    model is kept; a search stopped between the two has a better trial than the model it kept: that trial's
    model is made again (its training stages are kept) and kept with its row."""
    expected: dict = {}
    for row in sorted(_rows(study), key=lambda r: r["trial"]):  # one worker: the order the trials ended in
        slot = _slot(row, expected, config)
        if slot is not None:
            expected[slot] = row
            if slot == "best":
                expected["closest"] = None
    for slot in ("best", "closest"):
        want, have = expected.get(slot), state.get(slot)
        if want is None or (have is not None and have["trial"] == want["trial"]):
            continue
        logger.info("Trial %d ended but its model was not kept (the search stopped): making it again.", want["trial"])
        run_trial(setup, want["params"])
        state[slot] = None  # its place: `_keep_candidate` keeps it there
        _keep_candidate(setup, want, output, state, config)
        shutil.rmtree(setup.work, ignore_errors=True)


def _progress_line(state: dict, config: OptimizeConfig) -> str:
    best = state.get("best")
    key = RATIO.get(config.objective, "speedup_b16")
    line = f"best {best[key]:.2f}× (trial {best['trial']})" if best else "none within the budget yet"
    if config.seconds is not None:
        line += f", {max(0.0, config.seconds - state['elapsed']) / 60:.0f} min left"
    return line


def _ended(study) -> list:
    """The trials that ended (a trial stopped midway has no row, or one that does not count: it runs again)."""
    return [t for t in study.trials if "row" in t.user_attrs and not t.user_attrs.get(STOPPED)]


def _rows(study) -> list[dict]:
    """Every ended trial's row."""
    return [t.user_attrs["row"] for t in _ended(study)]


def _read_state(output: Path, study_name: str) -> dict:
    try:
        state = json.loads((output / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    if state.get("study") != study_name:  # another search's: its kept models are not this one's
        results = [name for name in ("model", "closest_model") if (output / name).exists()]
        if state.get("study") and results:
            raise InputError(
                f"{output} holds the {results[0]} of a search with other settings (data, space, budget, objective "
                f"or threads): give another --output_dir, or delete {output / results[0]} to search here again "
                "(the trained stages in stages/ are reused)"
            )
        for folder in CANDIDATES.values():  # with a half-swapped one (`folder.old`), which would come back below
            shutil.rmtree(output / folder, ignore_errors=True)
            shutil.rmtree(output / (folder + ".old"), ignore_errors=True)
        state = {}
    kept = {}  # each kept model's trial, from its own folder (the state file may be a trial behind)
    for slot, folder in CANDIDATES.items():
        aside = output / (folder + ".old")
        if aside.is_dir() and not (output / folder).exists():  # stopped between the two renames of a swap
            aside.rename(output / folder)
        try:
            kept[slot] = json.loads((output / folder / TRIAL_FILE).read_text())
        except (OSError, ValueError):
            kept[slot] = None
    return {"elapsed": state.get("elapsed", 0.0), **kept}


def _pipeline_config(config: OptimizeConfig, train_file: str, eval_file: str):
    return CompressionConfig(**shared_settings(config.pipeline), train_file=train_file, eval_file=eval_file)


def _num_layers(model_config) -> int:
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(model_config, name, None)
        if isinstance(value, int):
            return value
    return 0


def _onnx_available() -> bool:
    from ..compression.onnx import require_onnx

    try:
        require_onnx()
    except InputError:
        return False
    return True


def _size(model, tokenizer, model_dir: str, output: Path) -> int:
    """Bytes of the original's weights: its folder's, or (a hub model) those of a copy saved for the purpose."""
    from ..compression.io import save_compressed
    from ..compression.report import weights_size

    if Path(model_dir).is_dir():
        return weights_size(model_dir)
    folder = output / ".original_size"
    save_compressed(model, folder, tokenizer)
    try:
        return weights_size(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_space(space: dict, config: OptimizeConfig, tokenizer) -> dict:
    """Choices this installation or tokenizer cannot make: refused when stated, left out of the defaults."""
    import importlib.util

    stated = config.search_space
    if "int8_weight_only" in space["quantize"] and importlib.util.find_spec("torchao") is None:
        if stated.quantize is not None:
            raise InputError('space: quantize int8_weight_only needs torchao: pip install "hfopt[quant]"')
        space = {**space, "quantize": [q for q in space["quantize"] if q != "int8_weight_only"]}
    if True in space["prune_vocabulary"] and tokenizer.unk_token is None:
        if stated.prune_vocabulary is not None:
            raise InputError(
                "space: prune_vocabulary needs a tokenizer with an unknown token (pruned tokens map to it)"
            )
        space = {**space, "prune_vocabulary": [False]}
    return space


def _space_training(space: dict, distilling: bool = False) -> set[str]:
    """The training stages some trial of `space` has: a student, recovery after pruning, QAT (in PyTorch); with
    `distilling`, those that distil (recovery then only `distill`; students and QAT always distil)."""
    pruned = any(any(space.get(name, [])) for name in ("prune_vocabulary", "prune_heads", "prune_ffn"))
    recoveries = ("distill",) if distilling else ("distill", "finetune")
    recovers = pruned and any(r in recoveries for r in space.get("recover", []))
    on = {"student": any(space.get("student_layers", [])), "recover": recovers,
          "qat": "pytorch:qat" in deployment_choices(space)}  # fmt: skip
    return {stage for stage, trained in on.items() if trained}


def _screening_rows(ctx, selection, selection_file: str, config: OptimizeConfig, folder: Path):
    """`screen_fraction` of the selection rows (a seeded sample; see `screening_file`), scored before the rest;
    None when too few to tell anything (under 8 rows, or a text too short to fill a causal LM's block)."""
    used = len(selection.texts)
    rows = int(used * config.screen_fraction)
    if rows < 8:
        return None
    seed = config.pipeline.get("seed", 42)
    try:
        return ctx.data(screening_file(selection_file, rows, used, seed, ctx.task_name, folder), "selection_file", rows)
    except InputError as err:
        logger.info("No screening: %d selection rows cannot be scored alone (%s).", rows, err)
        return None
