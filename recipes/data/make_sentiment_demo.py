"""Write the bundled sentiment demo data: recipes/data/sentiment/{train,validation,test}.csv.

Short movie-review sentences labelled positive/negative, generated from templates with a fixed seed. The
held-out splits (validation, test) use adjectives, nouns, adverbs and sentence shapes that never occur in
train, so a model scores well on them only through what pretraining taught it about words, not by memorising
the training templates.

    python recipes/data/make_sentiment_demo.py [OUT_DIR]    # rewrites the three files identically
"""

import csv
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "sentiment"

TRAIN = {
    "positive": [
        "great",
        "wonderful",
        "excellent",
        "enjoyable",
        "brilliant",
        "charming",
        "beautiful",
        "fun",
        "clever",
        "impressive",
        "amazing",
        "pleasant",
    ],
    "negative": [
        "terrible",
        "awful",
        "boring",
        "dull",
        "bad",
        "horrible",
        "tedious",
        "disappointing",
        "weak",
        "annoying",
        "ugly",
        "stupid",
    ],
    "nouns": ["movie", "film", "story", "acting", "plot", "soundtrack", "show", "performance"],
    "adverbs": ["really", "very", "quite", "so", "truly"],
    "templates": [
        "the {noun} was {adj}.",
        "what a {adj} {noun}!",
        "i found the {noun} {adv} {adj}.",
        "honestly, a {adj} {noun}.",
        "the {noun} is {adv} {adj}.",
        "it was a {adv} {adj} {noun}.",
    ],
}
HELD_OUT = {
    "positive": [
        "superb",
        "delightful",
        "fantastic",
        "marvelous",
        "touching",
        "gripping",
        "stunning",
        "hilarious",
        "lovely",
        "outstanding",
        "terrific",
        "magnificent",
    ],
    "negative": [
        "dreadful",
        "lousy",
        "pointless",
        "bland",
        "clumsy",
        "painful",
        "forgettable",
        "mediocre",
        "lifeless",
        "unwatchable",
        "horrendous",
        "miserable",
    ],
    "nouns": ["documentary", "screenplay", "cast", "ending", "dialogue", "sequel", "series", "musical"],
    "adverbs": ["absolutely", "utterly", "incredibly", "simply", "genuinely"],
    "templates": [
        "my friends thought the {noun} felt {adv} {adj}.",
        "{adj} from start to finish, that {noun}.",
        "we watched a {adj} {noun} last night.",
        "everyone agreed: {adv} {adj}.",
        "critics called this {noun} {adj}.",
    ],
}
SIZES = {"train": 480, "validation": 200, "test": 200}


def sentences(words, n, rng, exclude=frozenset()):
    rows, seen = [], set(exclude)
    while len(rows) < n:
        label = rng.choice(["positive", "negative"])
        text = rng.choice(words["templates"]).format(
            noun=rng.choice(words["nouns"]), adj=rng.choice(words[label]), adv=rng.choice(words["adverbs"])
        )
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def main(out: Path = OUT):
    rng = random.Random(0)
    train = sentences(TRAIN, SIZES["train"], rng)
    held_out = sentences(HELD_OUT, SIZES["validation"] + SIZES["test"], rng)
    splits = {"train": train, "validation": held_out[: SIZES["validation"]], "test": held_out[SIZES["validation"] :]}
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["sentence", "label"])
            writer.writerows(rows)
        print(f"wrote {len(rows)} rows to {out / f'{split}.csv'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
