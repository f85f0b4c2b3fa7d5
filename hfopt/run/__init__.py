"""The life of a run on disk: its output_dir (a lock, resume only into the same configuration, checkpoints that
load), its record (config.yaml, run_info.json, all_results.json, the printed table), its model card (README.md,
pushed with the model by --push_to_hub), atomic writes, and the one-line endings of a recipe.

Example::

    plan = plan_output_dir(training_args, run_args, config, arguments, data_files, title="my_recipe")
    trainer.add_callback(RunRecordCallback(plan))
    results = train_and_save(trainer, plan)
    finish_run(trainer, results, plan=plan)
"""

from .files import folder_size, folder_swap, save_figure_atomic, write_json_atomic, write_text_atomic
from .lifecycle import (
    RunStopped,
    check_metric_for_best_model,
    exit_code,
    recipe_main,
    report_complete_run,
    start_run,
    train_and_evaluate,
    train_and_save,
)
from .model_card import (
    check_model_card,
    compression_model_card,
    push_run_to_hub,
    run_model_card,
    write_model_card,
    write_run_model_card,
)
from .output_dir import (
    CONFIG_FILE,
    RUN_INFO_FILE,
    RunLock,
    RunPlan,
    checkpoint_problem,
    config_differences,
    list_checkpoints,
    model_folders,
    path_fingerprint,
    plan_output_dir,
)
from .record import (
    RunRecordCallback,
    disk_usage,
    finish_run,
    format_results_table,
    library_versions,
    run_info,
    save_config,
)

__all__ = [
    "model_folders",
    "path_fingerprint",
    "CONFIG_FILE",
    "RUN_INFO_FILE",
    "RunLock",
    "RunPlan",
    "RunRecordCallback",
    "RunStopped",
    "check_metric_for_best_model",
    "check_model_card",
    "compression_model_card",
    "checkpoint_problem",
    "config_differences",
    "disk_usage",
    "finish_run",
    "folder_size",
    "folder_swap",
    "format_results_table",
    "library_versions",
    "list_checkpoints",
    "plan_output_dir",
    "push_run_to_hub",
    "exit_code",
    "recipe_main",
    "report_complete_run",
    "run_info",
    "run_model_card",
    "save_figure_atomic",
    "save_config",
    "start_run",
    "train_and_evaluate",
    "train_and_save",
    "write_json_atomic",
    "write_model_card",
    "write_run_model_card",
    "write_text_atomic",
]
