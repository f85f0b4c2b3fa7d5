"""Write the bundled translation demo: recipes/data/toy_translation/{train,validation}.jsonl.

English-like source sentences and their translation into "Toyish", a made-up language with its own words,
the adjective after the noun, the verb at the end, a plural suffix and an object marker. Deterministic
(fixed seed); each line is `{"translation": {"en": ..., "toy": ...}}`, the format of hub translation datasets.

    python recipes/data/make_translation_demo.py [OUT_DIR]    # rewrites the files identically
"""

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "toy_translation"
NOUNS = {
    "cat": "miru",
    "dog": "wanu",
    "bird": "piko",
    "child": "lota",
    "farmer": "gesu",
    "teacher": "doma",
    "horse": "bara",
    "fish": "sulo",
    "king": "reka",
    "girl": "nisa",
    "boy": "tako",
    "friend": "amu",
    "apple": "ponu",
    "book": "libo",
    "house": "kasa",
    "river": "fela",
    "tree": "arbo",
    "ball": "kuru",
    "bread": "pani",
    "song": "kanta",
}
ADJECTIVES = {
    "big": "gran",
    "small": "pik",
    "red": "ros",
    "old": "vek",
    "young": "jun",
    "happy": "fel",
    "green": "ver",
    "quiet": "kwi",
    "fast": "rap",
    "tired": "las",
}
VERBS = {
    "sees": "vidas",
    "likes": "amas",
    "finds": "trovas",
    "takes": "prenas",
    "helps": "helpas",
    "follows": "sekvas",
    "hears": "audas",
    "paints": "pentras",
}
SIZES = {"train": 4000, "validation": 200}


def noun_phrase(rng):
    noun = rng.choice(list(NOUNS))
    adjective = rng.choice(list(ADJECTIVES)) if rng.random() < 0.6 else None
    plural = rng.random() < 0.3
    en = " ".join(w for w in ["the", adjective, noun + ("s" if plural else "")] if w)
    toy = " ".join(w for w in [NOUNS[noun] + ("ti" if plural else ""), ADJECTIVES.get(adjective)] if w)
    return en, toy


def pair(rng):
    (subject_en, subject_toy), (object_en, object_toy) = noun_phrase(rng), noun_phrase(rng)
    verb = rng.choice(list(VERBS))
    return {"en": f"{subject_en} {verb} {object_en} .", "toy": f"{subject_toy} {object_toy} ka {VERBS[verb]} ."}


def main(out: Path = OUT) -> None:
    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        lines = [json.dumps({"translation": pair(rng)}) for _ in range(n)]
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {n} pairs to {out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
