"""A rule-based report labeler for the second world's grammar, in the style of the CheXpert labeler
(Irvin et al., 2019): each finding comes out positive, negative (denied) or absent (not mentioned),
with the side and size the report gives it.

It reads one sentence at a time: the sentence must name exactly one finding; "no" (or "normal", for
the heart) denies it. Text it cannot read is refused with a ValueError that says why — a word outside
the grammar's vocabulary, a sentence that names no finding or two, two sides or two sizes in one
sentence, an unfinished sentence, one finding stated two different ways — rather than guessed at.
"""

from __future__ import annotations

from .data import Tokenizer
from .rendered import RENDERED_FINDINGS, RENDERED_VOCAB, SIDES, SIZES

# The words that name each finding (any one of them names it).
FINDING_WORDS = {
    "cardiomegaly": frozenset({"cardiomegaly", "heart", "cardiac"}),
    "nodule": frozenset({"nodule"}),
    "consolidation": frozenset({"consolidation"}),
    "effusion": frozenset({"effusion"}),
    "pneumothorax": frozenset({"pneumothorax"}),
}
NEGATION_WORDS = frozenset({"no"})
ALL_SIZES = frozenset(s for sizes in SIZES.values() for s in sizes)

_TOKENIZER = Tokenizer(RENDERED_VOCAB)


def absent_label() -> dict:
    return {"status": "absent", "side": None, "size": None}


def split_sentences(text: str) -> list[list[str]]:
    """The words of each sentence (the full stops dropped). Refuses words outside the grammar's
    vocabulary and a last sentence without its full stop."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = _TOKENIZER.decode_tokens(_TOKENIZER.encode(text))[1:-1]   # refuses unknown words
    if not words:
        raise ValueError("the report is empty: expected one or more sentences")
    sentences, current = [], []
    for w in words:
        if w == ".":
            if not current:
                raise ValueError(f"an empty sentence (two full stops) in {text!r}")
            sentences.append(current)
            current = []
        else:
            current.append(w)
    if current:
        raise ValueError(f"the last sentence is not finished with a full stop: "
                         f"{' '.join(current)!r}")
    return sentences


def label_sentence(words: list[str]) -> tuple[str, dict]:
    """(finding, {"status", "side", "size"}) of one sentence's words."""
    said = " ".join(words)
    named = [f for f in RENDERED_FINDINGS if FINDING_WORDS[f] & set(words)]
    if len(named) != 1:
        what = "no finding" if not named else f"{len(named)} findings ({', '.join(named)})"
        raise ValueError(f"the sentence {said!r} names {what}; expected exactly one")
    finding = named[0]
    sides = [w for w in SIDES if w in words]
    sizes = [w for w in sorted(ALL_SIZES) if w in words]
    if len(sides) > 1 or len(sizes) > 1:
        raise ValueError(f"the sentence {said!r} gives {finding} more than one side or size")
    denied = bool(NEGATION_WORDS & set(words))
    if finding == "cardiomegaly":
        # The heart is named by "heart" / "cardiac": the sentence must say enlarged or normal.
        enlarged = "enlarged" in words or ("cardiomegaly" in words and not denied)
        normal = "normal" in words or denied
        if enlarged == normal:
            raise ValueError(f"the sentence {said!r} does not say whether the heart is enlarged")
        denied = normal
    return finding, {"status": "negative" if denied else "positive",
                     "side": sides[0] if sides else None,
                     "size": sizes[0] if sizes else None}


def label_findings(text: str) -> dict:
    """{finding: {"status": "positive" | "negative" | "absent", "side", "size"}} for every finding
    of `RENDERED_FINDINGS`, read from a report of the second world's grammar."""
    labels = {f: absent_label() for f in RENDERED_FINDINGS}
    for words in split_sentences(text):
        finding, label = label_sentence(words)
        if labels[finding]["status"] != "absent" and labels[finding] != label:
            raise ValueError(f"the report states {finding} twice, differently: "
                             f"{labels[finding]} and {label}")
        labels[finding] = label
    return labels
