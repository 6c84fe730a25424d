import math

import pytest
import torch

import medsight_lab as ml
from medsight_lab.metrics import auroc, per_finding_prf


@pytest.mark.parametrize("finding_idx", sorted(ml.FINDINGS))
def test_labeler_on_every_report_template(finding_idx):
    name, report = ml.FINDINGS[finding_idx]
    assert ml.label_report(report) == {name}


def test_labeler_on_broken_reports():
    assert ml.label_report("There is a small") == set()
    assert ml.label_report("") == set()
    assert ml.label_report("Heart is enlarged. There is a pneumothorax.") == {"cardiomegaly",
                                                                              "pneumothorax"}


def test_per_finding_prf_by_hand():
    truth = ["nodule", "nodule", "normal", "effusion"]
    predicted = [{"nodule"}, {"pneumothorax"}, {"nodule"}, {"effusion"}]
    s = per_finding_prf(truth, predicted)
    assert s["nodule"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert s["effusion"]["f1"] == 1.0
    assert s["pneumothorax"]["precision"] == 0.0 and s["normal"]["recall"] == 0.0


def test_bleu_by_hand():
    assert ml.corpus_bleu([list("abcde")], [list("abcde")]) == 1.0
    assert ml.corpus_bleu([list("abcde")], [list("xyz")]) == 0.0
    # hyp "a b c d" vs ref "a b c d e": precisions 1, brevity penalty exp(1 - 5/4)
    assert ml.corpus_bleu([list("abcde")], [list("abcd")]) == pytest.approx(math.exp(-0.25))
    # one wrong token in 6: p1=5/6, p2=3/5, p3=1/4... with 'x' in the middle
    ref, hyp = list("abcdef"), list("abxdef")
    p = [5 / 6, 3 / 5, 1 / 4, 0 / 3]
    assert ml.corpus_bleu([ref], [hyp]) == 0.0 and p[3] == 0
    ref, hyp = list("abcdefgh"), list("abcdefgx")
    p = [7 / 8, 6 / 7, 5 / 6, 4 / 5]
    expected = math.exp(sum(math.log(x) for x in p) / 4)
    assert ml.corpus_bleu([ref], [hyp]) == pytest.approx(expected)


def test_auroc_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.5], [0.1, 0.9, 0.2, 0.3]])
    labels = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]])
    # row 0: pairs (0.9>0.1, 0.9>0.5, 0.5>0.1, 0.5=0.5) -> 3.5/4; row 1: 0.1 beats none -> 0
    torch.testing.assert_close(auroc(scores, labels), torch.tensor([0.875, 0.0]))
    with pytest.raises(ValueError, match="positive and one negative"):
        auroc(scores, torch.ones(2, 4))


def test_grounding_scores_by_hand():
    nodule = ml.VOCAB.index("nodule")
    there = ml.VOCAB.index("there")
    tokens = torch.tensor([[1, there, nodule, 2], [1, there, nodule, 2]])
    lesion = torch.zeros(2, 16)
    lesion[0, [0, 1]] = 1.0                       # image 1 is normal: skipped
    attn = torch.full((2, 4, 16), 1 / 16)
    attn[0, 2] = 0.0
    attn[0, 2, 0], attn[0, 2, 5] = 0.6, 0.4       # "nodule" row: 0.6 inside the lesion
    attn[:, 3] = 0.0                              # <eos> never read
    s = ml.grounding_scores(tokens, attn, lesion)
    assert s["n_grounded_words"] == 1
    assert s["pointing_game"] == 1.0 and s["attention_mass"] == pytest.approx(0.6)
    assert s["pointing_game_chance"] == pytest.approx(2 / 16)
    # patch 0 (0.6) and 1 (0.0) vs 14 negatives: 0 beats all 14; 1 ties 13 zeros, loses to 5
    assert s["auroc"] == pytest.approx((14 + 13 * 0.5) / 28)


def test_evaluate_on_a_trained_model(trained):
    metrics = ml.evaluate(trained, ml.SyntheticRadiologyDataset(100, seed=11))
    assert set(metrics) >= {"exact_match", "finding_accuracy", "per_finding", "bleu4",
                            "pointing_game", "pointing_game_chance", "attention_mass",
                            "auroc", "teacher_forced_token_accuracy"}
    assert 0 <= metrics["exact_match"] <= metrics["finding_accuracy"] <= 1
    assert metrics["pointing_game"] > metrics["pointing_game_chance"]


def test_evaluate_refuses_a_model_with_another_vocabulary():
    model = ml.GroundedReportVLM(64, 32, 4, 1, vocab_size=33, max_len=20)
    with pytest.raises(ValueError, match="vocabulary"):
        ml.evaluate(model, ml.SyntheticRadiologyDataset(5))


def test_majority_baseline_writes_the_most_common_report(dataset):
    from medsight_lab.metrics import majority_baseline
    baseline = majority_baseline(dataset)
    names = [dataset[i]["finding_name"] for i in range(len(dataset))]
    share = max(names.count(n) for n in set(names)) / len(names)
    assert baseline["exact_match"] == baseline["finding_accuracy"] == share
    assert baseline["finding_name"] == max(set(names), key=names.count)
    first = dataset[names.index(baseline["finding_name"])]
    assert baseline["report"] == ml.FINDINGS[first["finding_idx"]][1]
    assert 0 < baseline["bleu4"] < 1
    same = torch.utils.data.Subset(dataset, [i for i, n in enumerate(names) if n == "nodule"])
    assert majority_baseline(same)["bleu4"] == pytest.approx(1.0)     # every report is the one
    with pytest.raises(ValueError, match="empty"):
        majority_baseline(torch.utils.data.Subset(dataset, []))
