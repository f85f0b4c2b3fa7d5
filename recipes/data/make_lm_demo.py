"""Write the bundled language-modelling demo text: recipes/data/stories/{train,validation}.txt.

Short children's stories generated from templates with a fixed seed (one story per line), small enough for
a GPT-2-style model trained from scratch on two CPU cores to learn their regularities in a minute or two.

    python recipes/data/make_lm_demo.py [OUT_DIR]    # rewrites the files identically
"""

import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "stories"
NAMES = ["Tom", "Lily", "Max", "Mia", "Ben", "Zoe", "Sam", "Anna", "Leo", "Emma", "Jack", "Ruby"]
ANIMALS = ["cat", "dog", "rabbit", "fox", "bird", "bear", "mouse", "duck", "frog", "owl", "horse", "turtle"]
PLACES = [
    "a small house",
    "the big forest",
    "a quiet village",
    "the green hill",
    "a little farm",
    "the old garden",
    "a sunny meadow",
    "the blue lake",
]
ADJECTIVES = ["kind", "happy", "shy", "brave", "funny", "clever", "sleepy", "tiny", "friendly", "curious"]
MORNING = [
    "ate an apple",
    "sang a song",
    "went for a walk",
    "read a book",
    "looked at the sky",
    "played in the grass",
    "drank some milk",
    "cleaned the house",
]
TOGETHER = [
    "played a game",
    "built a tower",
    "went to the river",
    "found a red ball",
    "ate a cake",
    "watched the stars",
    "climbed a tree",
    "made a picture",
]
FEELINGS = ["happy", "glad", "proud", "tired but happy", "very happy"]
SIZES = {"train": 1500, "validation": 150}


def story(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    animal, other = rng.sample(ANIMALS, 2)
    return (
        f"Once upon a time, there was a {rng.choice(ADJECTIVES)} {animal} named {name}. "
        f"{name} lived in {rng.choice(PLACES)}. Every morning, {name} {rng.choice(MORNING)}. "
        f"One day, {name} met a {rng.choice(ADJECTIVES)} {other} called {friend}. "
        f"{name} and {friend} {rng.choice(TOGETHER)} together. "
        f"At the end of the day, {name} felt {rng.choice(FEELINGS)}. The end."
    )


def main(out: Path = OUT) -> None:
    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        (out / f"{split}.txt").write_text("\n".join(story(rng) for _ in range(n)) + "\n", encoding="utf-8")
        print(f"wrote {n} stories to {out / f'{split}.txt'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
