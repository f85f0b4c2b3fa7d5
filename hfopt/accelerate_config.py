"""Accelerate config files checked before a launch: accelerate can load them and their values can run
(accelerate itself accepts `mixed_precision: bf17` or `num_processes: -3` and fails later, or not at all).

Example::

    check_accelerate_config("accelerate_configs/deepspeed_zero2.yaml")
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import yaml

from .args import load_yaml
from .errors import InputError

__all__ = ["check_accelerate_config"]

CHOICES = {
    "compute_environment": ("LOCAL_MACHINE", "AMAZON_SAGEMAKER"),
    "mixed_precision": ("no", "fp16", "bf16", "fp8"),
    "rdzv_backend": ("static", "c10d", "etcd", "etcd-v2"),
    "downcast_bf16": ("no", "yes", True, False),
}
BOOLEANS = ("use_cpu", "debug", "same_network", "enable_cpu_affinity", "tpu_use_cluster", "tpu_use_sudo")
SECTION_CHOICES = {
    "deepspeed_config": {
        "zero_stage": (0, 1, 2, 3),
        "offload_optimizer_device": ("none", "cpu", "nvme"),
        "offload_param_device": ("none", "cpu", "nvme"),
    },
    "fsdp_config": {
        "fsdp_version": (1, 2),
        "fsdp_state_dict_type": ("FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT"),
        "fsdp_auto_wrap_policy": ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"),
    },
}


def _integer(config: dict, key: str, path: str, minimum: int, maximum: int | None = None) -> int | None:
    if key not in config:
        return None
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum else f"≥ {minimum}"
        raise InputError(f"accelerate config {path}: {key} must be a whole number {bound}, got {value!r}")
    return value


def check_accelerate_config(path: str) -> dict[str, Any]:
    """Raise InputError with one line when path is not an accelerate config accelerate can load, or holds a value
    that cannot run; return its mapping."""
    import dataclasses

    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    if not os.path.isfile(path):
        raise InputError(f"accelerate config {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            config = load_yaml(fh, f"accelerate config {path}")
    except yaml.YAMLError as err:
        raise InputError(f"accelerate config {path} does not parse: {' '.join(str(err).split())[:300]}") from None
    if config is None:
        raise InputError(f"accelerate config {path} is empty")
    if not isinstance(config, dict):
        raise InputError(f"accelerate config {path} must be a mapping of key: value, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(ClusterConfig)}
    for key in config:
        if key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise InputError(
                f"accelerate config {path}: unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
            )
    distributed = config.get("distributed_type")
    valid_types = [t.value for t in DistributedType]
    if distributed is None:
        raise InputError(f"accelerate config {path}: distributed_type is missing (one of {', '.join(valid_types)})")
    if str(distributed) not in valid_types:
        raise InputError(
            f"accelerate config {path}: distributed_type '{distributed}' is not one of {', '.join(valid_types)}"
        )
    for key, choices in CHOICES.items():
        if key in config and config[key] not in choices:
            raise InputError(
                f"accelerate config {path}: {key} '{config[key]}' is not one of {', '.join(str(c) for c in choices)}"
            )
    for key in BOOLEANS:
        if key in config and not isinstance(config[key], bool):
            raise InputError(f"accelerate config {path}: {key} must be true or false, got {config[key]!r}")
    processes = _integer(config, "num_processes", path, 1)
    machines = _integer(config, "num_machines", path, 1) or 1
    _integer(config, "machine_rank", path, 0, machines - 1)
    _integer(config, "main_process_port", path, 1, 65535)
    if processes is not None and processes < machines:
        raise InputError(
            f"accelerate config {path}: num_processes ({processes}) is the total over all machines and "
            f"cannot be fewer than num_machines ({machines})"
        )
    for section, choices in SECTION_CHOICES.items():
        values = config.get(section) or {}
        if not isinstance(values, dict):
            raise InputError(f"accelerate config {path}: {section} must be a mapping")
        for key, allowed in choices.items():
            if key in values and values[key] not in allowed:
                raise InputError(
                    f"accelerate config {path}: {section}.{key} '{values[key]}' is not one of "
                    f"{', '.join(str(a) for a in allowed)}"
                )
    try:
        load_config_from_file(path)
    except Exception as err:  # accelerate raises many types for a config it cannot read
        detail = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"accelerate config {path} does not parse: {detail[:300]}") from None
    return config
