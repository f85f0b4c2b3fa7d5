"""Known-harmless third-party log lines, dropped at their source (each library's own logger, by message), so that
hfopt's own lines are what a run shows; `--verbose` (or HFOPT_VERBOSE=1) shows everything again.

`import hfopt` installs the filters before hfopt imports transformers (which imports torchao, whose optional
kernels log "Failed to load" when absent); a recipe imports hfopt first for that reason. Anything not listed
here still shows: the filters drop these exact messages, never a logger's other warnings.

Example::

    quiet_third_party(verbose=False)   # at the start of a run; verbose=True removes the filters
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

__all__ = ["VERBOSE_ENV", "is_verbose", "quiet_third_party"]

VERBOSE_ENV = "HFOPT_VERBOSE"

# logger name → messages (regular expressions, matched at the start) that are dropped, and why they are harmless.
KNOWN_HARMLESS: dict[str, tuple[str, ...]] = {
    # torchao ships kernels for other Python ABIs and for Hopper GPUs; transformers imports torchao when it is
    # installed (transformers.quantizers), and torchao logs each kernel it cannot load. hfopt never needs them.
    "torchao": (r"Failed to load .*_C",),
    # torchao registers its Enums with torch.compile the old way, at import.
    "torch.utils._pytree": (r".* is an Enum subclass and is now natively supported by torch\.compile",),
    # accelerate imports DeepSpeed (when installed) to unwrap any model; DeepSpeed then says it found no GPU.
    "DeepSpeed": (r"Setting accelerator to CPU",),
    # `accelerate launch` without a config: it lists the defaults it used (one process, fp32), which are right.
    "accelerate.commands.launch": (r"The following values were not passed to `accelerate launch`",),
    "transformers.modeling_utils": (
        # transformers' table of missing/unexpected keys (with terminal colour codes); hfopt.models says in one
        # line when a task head is new and refuses a model that lacks one it needs.
        r".*LOAD REPORT",
        # GPT-2's config carries loss_type=None; transformers then uses the causal LM loss, the right one.
        r"`loss_type=None` was set in the config but it is unrecognized",
        # GPT-2's pad token is its end-of-text token, which the causal LM recipe's packed blocks hold between
        # documents (no padding there); its padded batches (prompt/completion) carry an attention mask.
        r"We strongly recommend passing in an `attention_mask` since your input_ids may be padded",
    ),
    # sacrebleu guesses "tokenized" from references ending in " ." (the bundled demo's style).
    # torchao's int matmul module, at import on machines without Triton (CPU): hfopt uses no Triton kernel.
    "torchao.kernel.intmm": (r"Warning: Detected no triton",),
    "sacrebleu": (
        r"That's 100 lines that end in a tokenized period",
        r"It looks like you forgot to detokenize",
        r"If you insist your data is detokenized",
    ),
}


# Python warnings (category, message regular expression): dropped by `warnings` filters for these messages only.
KNOWN_HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # torch's int8 tensors behind dynamic quantization (--quantize dynamic_int8) will move to torchao one day;
    # a note for hfopt's maintainers (bench/ and tests pin the behaviour), not for a user's run.
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation"),
)


class _DropKnown(logging.Filter):
    """Drops records whose message matches one of the patterns (a logging.Filter survives a library resetting
    its logger's level or handlers)."""

    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns), re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let it through
            return True
        return not self.pattern.match(message)


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "on")


def is_verbose(argv: list[str] | None = None) -> bool:
    """Whether a process asked to see everything: HFOPT_VERBOSE=1, or `--verbose` (`--verbose true`) among its
    arguments (read at import, before a recipe parses them)."""
    if _truthy(os.environ.get(VERBOSE_ENV)):
        return True
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--verbose":
            following = argv[i + 1] if i + 1 < len(argv) else ""
            return following.startswith("-") or following == "" or _truthy(following)
        if arg.startswith("--verbose="):
            return _truthy(arg.split("=", 1)[1])
    return False


def quiet_third_party(verbose: bool = False) -> None:
    """Install (verbose=False) or remove (verbose=True) the filters of `KNOWN_HARMLESS`; idempotent. With
    verbose, HFOPT_VERBOSE=1 is also set so that processes this one starts (a launch's workers) show everything.

    Example::

        quiet_third_party(verbose=training_is_being_debugged)
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    for name, patterns in KNOWN_HARMLESS.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropKnown)]:
            logger.removeFilter(old)
        if not verbose:
            logger.addFilter(_DropKnown(patterns))
    for category, message in KNOWN_HARMLESS_WARNINGS:
        warnings.filters[:] = [f for f in warnings.filters if not (f[1] is not None and f[1].pattern == message)]
        if not verbose:
            warnings.filterwarnings("ignore", message=message, category=category)
