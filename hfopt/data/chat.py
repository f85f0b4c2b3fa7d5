"""Instruction and chat data for causal LMs: the data format (text, prompt/completion, messages), its checks,
chat templates, and which characters of a rendered conversation the model learns (the assistant turns).

Example::

    data_format = detect_lm_format(raw, sources)                # "text", "prompt_completion" or "messages"
    check_lm_rows(raw, sources, data_format)                    # one line naming file, row and column
    use_chat_template(tokenizer, "simple")                      # a tokenizer trained from scratch has none
    text, spans = render_conversation(tokenizer, [{"role": "user", "content": "2+2?"},
                                                  {"role": "assistant", "content": "4"}])
"""

from __future__ import annotations

import os

from datasets import DatasetDict

from ..errors import InputError
from .files import DataSources

__all__ = [
    "CHAT_TEMPLATES",
    "check_lm_rows",
    "detect_lm_format",
    "example_texts",
    "lm_modes",
    "render_conversation",
    "render_prompt",
    "use_chat_template",
]

LM_DATA_FORMATS = ("text", "prompt_completion", "messages")
ROLES = ("system", "user", "assistant")

# Named templates for tokenizers without one (models trained from scratch): plain-text role headers, the
# assistant turn ended by the tokenizer's eos token so that the model learns to stop. The generation prompt
# ends without the space after "Assistant:": byte-level BPE joins that space to the answer's first word.
CHAT_TEMPLATES = {
    "simple": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
        "{% elif message['role'] == 'system' %}System: {{ message['content'] }}\n"
        "{% else %}User: {{ message['content'] }}\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}


def detect_lm_format(raw: DatasetDict, sources: DataSources, data_format: str = "auto") -> str:
    """The format of causal-LM data: `messages` (a column of conversations), `prompt_completion` (two text
    columns) or `text`; `data_format` other than "auto" names it and is checked. Every split must have the
    columns; one of prompt/completion without the other is an error naming the file.

    Example::

        detect_lm_format(raw, sources)            # "messages" when the files have a messages column
    """
    first = "train" if "train" in raw else next(iter(raw))
    columns = set(raw[first].column_names)
    if data_format in (None, "auto"):
        if "messages" in columns:
            data_format = "messages"
        elif columns & {"prompt", "completion"}:
            data_format = "prompt_completion"
        else:
            return "text"
    if data_format not in LM_DATA_FORMATS:
        raise InputError(f"data_format must be auto or one of {', '.join(LM_DATA_FORMATS)}, got '{data_format}'")
    needed = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"], "text": []}[data_format]
    for split, dataset in raw.items():
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            have = [c for c in needed if c not in missing]
            start = f"has a '{have[0]}' column but no '{missing[0]}'" if have else f"has no '{missing[0]}'"
            raise InputError(
                f"{sources.of(split)} {start} column ({data_format} data); columns found: "
                + ", ".join(dataset.column_names)
            )
    return data_format


def check_lm_rows(raw: DatasetDict, sources: DataSources, data_format: str) -> None:
    """Fail on the first row that cannot train, naming file, row (1-based, in the split's order) and column:
    prompt/completion that is not text or an empty completion; a conversation that is not a list of
    {role, content}, has a role other than system/user/assistant, an empty assistant turn, or no assistant turn.

    Example::

        check_lm_rows(raw, sources, "messages")
        # InputError: train_file chat.jsonl row 3, column 'messages': turn 2 has unknown role 'bot' ...
    """
    for split, dataset in raw.items():
        if data_format == "prompt_completion":
            for i, (prompt, completion) in enumerate(zip(dataset["prompt"], dataset["completion"], strict=True)):
                where = f"{sources.of(split)} row {i + 1}"
                if not isinstance(prompt, str):
                    raise InputError(f"{where}, column 'prompt': {type(prompt).__name__} instead of text")
                if not isinstance(completion, str) or not completion.strip():
                    what = "is empty" if isinstance(completion, str) or completion is None else "is not text"
                    raise InputError(f"{where}, column 'completion' {what}: every prompt needs a completion to learn")
        elif data_format == "messages":
            for i, messages in enumerate(dataset["messages"]):
                _check_conversation(messages, f"{sources.of(split)} row {i + 1}, column 'messages'")


def _check_conversation(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: a conversation must be a non-empty list of {{role, content}} turns")
    for j, turn in enumerate(messages):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise InputError(f"{where}: turn {j + 1} is not a {{role, content}} mapping")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise InputError(f"{where}: turn {j + 1} has unknown role '{role}' (roles: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise InputError(f"{where}: turn {j + 1} ({role}) has {type(content).__name__} content instead of text")
        if role == "assistant" and not content.strip():
            raise InputError(f"{where}: turn {j + 1} is an empty assistant turn")
    if not any(turn["role"] == "assistant" for turn in messages):
        raise InputError(f"{where}: the conversation has no assistant turn, so nothing to learn")


def use_chat_template(tokenizer, chat_template: str | None = None) -> None:
    """Give the tokenizer the chat template named (`simple`, `chatml`) or read from a Jinja file; without one,
    the tokenizer must already have a template, else a one-line error names the flag.

    Example::

        use_chat_template(tokenizer, "simple")     # "User: ...\\nAssistant: ...<eos>\\n"
    """
    if chat_template:
        if chat_template in CHAT_TEMPLATES:
            tokenizer.chat_template = CHAT_TEMPLATES[chat_template]
        elif os.path.isfile(chat_template):
            with open(chat_template, encoding="utf-8") as fh:
                tokenizer.chat_template = fh.read()
        else:
            raise InputError(
                f"chat_template '{chat_template}' is neither a file nor one of {', '.join(CHAT_TEMPLATES)}"
            )
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            "the tokenizer has no chat template to render 'messages' data: give one with --chat_template FILE "
            f"(a Jinja template) or --chat_template {' or '.join(CHAT_TEMPLATES)} (for a model trained from scratch)"
        )


def render_conversation(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as the chat template renders it, and the character spans of its assistant turns (each
    turn's content and the template's end-of-turn marker): the text the model learns with completion-only loss.

    Found by rendering the conversation up to each assistant turn with the generation prompt, and up to its end;
    a template whose rendering of the first turns is not a prefix of the whole cannot be split so, an error.

    Example::

        text, spans = render_conversation(tokenizer, messages)
        assistant_text = [text[a:b] for a, b in spans]
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(before) and text.startswith(upto) and len(before) <= len(upto)):
            raise InputError(
                "the chat template does not render a conversation's first turns as the beginning of the whole "
                "conversation, so the assistant turns cannot be found: give a simpler one with --chat_template, "
                "or --completion_only_loss false"
            )
        spans.append((len(before), len(upto)))
    return text, spans


def render_prompt(tokenizer, prompt: str, data_format: str) -> str:
    """The text a sample is generated from: for chat data `prompt` as the user turn followed by the template's
    generation prompt, else `prompt` itself.

    Example::

        render_prompt(tokenizer, "What is 2 + 3?", "messages")   # "User: What is 2 + 3?\\nAssistant:"
    """
    if data_format == "messages":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def lm_modes(
    data_format: str, packing: str | None, completion_only_loss: bool | None, sources: DataSources
) -> tuple[str, bool]:
    """The packing and completion-only setting a run uses: unset packing is padding_free for prompt/completion
    and chat data, blocks for text; unset completion_only_loss is on for prompt/completion and chat data. Plain
    text has no completion, so asking for completion-only loss there is an error.

    Example::

        packing, completion_only = lm_modes("messages", None, None, sources)     # ("padding_free", True)
    """
    instruction = data_format != "text"
    if completion_only_loss and not instruction:
        raise InputError(
            f"--completion_only_loss needs prompt/completion or messages data; {sources.of('train')} holds plain "
            "text (set --data_format if its columns were not recognised)"
        )
    packing = packing or ("padding_free" if instruction else "blocks")
    return packing, instruction if completion_only_loss is None else bool(completion_only_loss)


def example_texts(dataset, data_format: str, tokenizer=None) -> list[str]:
    """The text of each example of a split: prompt + completion, or a conversation rendered with the tokenizer's
    chat template (without a tokenizer, "Role: content" lines: what a tokenizer trained from scratch learns from).

    Example::

        tokenizer = load_tokenizer(model_args, train_texts=example_texts(raw["train"], "messages"))
    """
    if data_format == "prompt_completion":
        return [p + c for p, c in zip(dataset["prompt"], dataset["completion"], strict=True)]
    if data_format == "messages":
        if tokenizer is not None:
            return [tokenizer.apply_chat_template(m, tokenize=False) for m in dataset["messages"]]
        return ["\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in m) for m in dataset["messages"]]
    raise ValueError(f"example_texts reads prompt_completion or messages data, not {data_format}")
