"""label_findings: the second world's rule-based labeler."""

import itertools

import pytest

import medsight_lab as ml
from medsight_lab.rendered import (HAS_SIDE, HAS_ZONE, MAY_OMIT, NEGATIVE, POSITIVE,
                                   RENDERED_FINDINGS, SIDES, SIZES, ZONES, all_sentences, sentence)


def _choices(finding):
    """Every (label, phrasing -> sentence or None) one finding can take in a report."""
    out = []
    for side in (SIDES if finding in HAS_SIDE else (None,)):
        for size in SIZES.get(finding, (None,)):
            label = {"status": "positive", "side": side, "size": size}
            out.append((label, lambda k, side=side, size=size: sentence(
                finding, True, k % len(POSITIVE[finding]), side,
                ZONES[k % 2] if finding in HAS_ZONE else None, size)))
    out.append(({"status": "negative", "side": None, "size": None},
                lambda k: sentence(finding, False, k % len(NEGATIVE[finding]))))
    if finding in MAY_OMIT:
        out.append(({"status": "absent", "side": None, "size": None}, lambda k: None))
    return out


def test_every_sentence_alone():
    for finding, label, text in all_sentences():
        expected = {f: {"status": "absent", "side": None, "size": None} for f in RENDERED_FINDINGS}
        expected[finding] = label
        assert ml.label_findings(text) == expected, text


def test_every_label_combination_the_grammar_can_write():
    # Every combination of per-finding labels with 0-3 positives, each written in every phrasing
    # (the phrasings of all findings in lockstep; sentences are read one at a time, so this covers
    # every sentence in every place it can take in a report).
    n = 0
    for combo in itertools.product(*(_choices(f) for f in RENDERED_FINDINGS)):
        if sum(label["status"] == "positive" for label, _ in combo) > 3:
            continue
        expected = {f: label for f, (label, _) in zip(RENDERED_FINDINGS, combo)}
        for k in range(3):
            text = " ".join(s for _, write in combo if (s := write(k)) is not None)
            assert ml.label_findings(text) == expected, text
            n += 1
    assert n > 2000


def test_every_dataset_report():
    ds = ml.RenderedChestXrayDataset(400, seed=11)
    assert all(ml.label_findings(r) == l for r, l in zip(ds.reports, ds.labels))


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("The heart is enlarged", "not finished"),
    ("The heart is enlarged.. No pneumothorax.", "empty sentence"),
    ("There is a small fracture.", "not in the vocabulary"),
    ("There is a small right.", "names no finding"),
    ("No pneumothorax or pleural effusion.", "not in the vocabulary"),
    ("No pneumothorax pleural effusion.", "2 findings"),
    ("There is a small large right pneumothorax.", "more than one side or size"),
    ("There is a small right left pneumothorax.", "more than one side or size"),
    ("The heart is.", "enlarged"),
    ("The heart size is normal. The heart is enlarged.", "twice, differently"),
    ("No pneumothorax. There is a small right pneumothorax.", "twice, differently"),
])
def test_refuses_what_it_cannot_read(text, match):
    with pytest.raises(ValueError, match=match):
        ml.label_findings(text)


def test_negation_side_and_size_are_read_not_guessed():
    lab = ml.label_findings("No cardiomegaly. There is a large left pneumothorax. No pleural effusion.")
    assert lab["cardiomegaly"]["status"] == "negative"
    assert lab["pneumothorax"] == {"status": "positive", "side": "left", "size": "large"}
    assert lab["effusion"]["status"] == "negative"
    assert lab["nodule"]["status"] == "absent"
    # a repeated identical statement is readable (a generated report may repeat itself)
    assert ml.label_findings("No pneumothorax. No pneumothorax.")["pneumothorax"]["status"] \
        == "negative"
    with pytest.raises(TypeError):
        ml.label_findings(None)
