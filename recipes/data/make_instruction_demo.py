"""Write the bundled instruction (chat) demo: recipes/data/instruction/{train,validation}.jsonl.

Conversations in the `messages` format ([{role, content}], one per line) with checkable answers: sums of two
numbers below 10, the number after one below 100, capitals from a small table, a word spelt backwards. Some
have a system turn, some two question/answer rounds (both assistant turns are learnt). Generated from templates
with a fixed seed; the validation questions are drawn the same way, so a model that learnt the rules answers
them.

    python recipes/data/make_instruction_demo.py [OUT_DIR]    # rewrites the files identically
"""

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "instruction"
CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Chile": "Santiago",
}
WORDS = ["cat", "dog", "sun", "tree", "book", "milk", "fish", "star", "rain", "bird", "cake", "ship", "lamp", "road"]
SYSTEMS = ["You are a helpful assistant.", "Answer in one short sentence."]


def question(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randrange(10), rng.randrange(10)
        ask = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "How much is {a} plus {b}?"])
        return ask.format(a=a, b=b), f"{a} + {b} = {a + b}."
    if kind == 1:
        n = rng.randrange(99)
        ask = rng.choice(["What comes after {n}?", "Which number follows {n}?"])
        return ask.format(n=n), f"The number after {n} is {n + 1}."
    if kind == 2:
        country = rng.choice(sorted(CAPITALS))
        return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."
    word = rng.choice(WORDS)
    return f"Spell {word} backwards.", f"{word} backwards is {word[::-1]}."


def conversation(rng: random.Random) -> dict:
    messages = []
    if rng.random() < 0.25:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    for _ in range(2 if rng.random() < 0.2 else 1):
        ask, answer = question(rng)
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    write(out / "train.jsonl", [conversation(rng) for _ in range(3000)])
    write(out / "validation.jsonl", [conversation(rng) for _ in range(200)])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
