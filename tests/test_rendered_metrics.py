"""The second world's scores, on small hand-made cases, and evaluate / training on both worlds."""

import math

import pytest
import torch

import medsight_lab as ml
from medsight_lab.rendered import RENDERED_FINDINGS
from medsight_lab.rendered_metrics import (baseline_grounding, clinical_chance, clinical_scores,
                                           grounded_scores, positive_sentences)

torch.set_num_threads(1)


def labels(**positives):
    """Labels with the given positive findings ({finding: (side, size)}), the others negative."""
    out = {f: {"status": "negative", "side": None, "size": None} for f in RENDERED_FINDINGS}
    for f, (side, size) in positives.items():
        out[f] = {"status": "positive", "side": side, "size": size}
    return out


def test_clinical_scores_by_hand():
    truth = [labels(effusion=("left", "small"), nodule=("right", None)),
             labels(cardiomegaly=(None, None)),
             labels()]
    predicted = [labels(effusion=("left", "large"), pneumothorax=("right", "small")),  # 1 tp 1 fp 1 fn
                 labels(cardiomegaly=(None, None)),                                   # 1 tp
                 None]                                                                 # unreadable
    s = clinical_scores(predicted, truth)
    # tp 2, fp 1, fn 1: precision 2/3, recall 2/3
    assert s["finding_f1_micro"] == pytest.approx(2 / 3)
    assert s["hallucination_rate"] == pytest.approx(1 / 3)
    assert s["omission_rate"] == pytest.approx(1 / 3)
    assert s["laterality_accuracy"] == 1.0          # the effusion's side is right
    assert s["severity_accuracy"] == 0.0            # ... its size is not
    assert s["unreadable_rate"] == pytest.approx(1 / 3)
    per = s["per_finding"]
    assert per["effusion"]["f1"] == 1.0 and per["nodule"]["recall"] == 0.0
    assert per["pneumothorax"]["precision"] == 0.0 and per["pneumothorax"]["support"] == 0
    # macro over the findings with support: effusion 1, nodule 0, cardiomegaly 1
    assert s["finding_f1_macro"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="predicted labels"):
        clinical_scores(predicted[:2], truth)


def test_wrong_side_is_a_laterality_error_not_an_omission():
    s = clinical_scores([labels(effusion=("right", "small"))], [labels(effusion=("left", "small"))])
    assert s["finding_f1_micro"] == 1.0 and s["laterality_accuracy"] == 0.0


def test_chance_of_a_prevalence_guesser():
    truth = [labels(effusion=("left", "small")), labels(), labels(), labels()]
    c = clinical_chance(truth)
    assert c["finding_f1_micro"] == pytest.approx(0.25)     # one finding at prevalence 1/4
    assert c["severity_accuracy"] == pytest.approx(1 / 3)   # three effusion sizes


def test_positive_sentences_positions():
    tokens = ["<bos>", "no", "cardiomegaly", ".", "there", "is", "a", "small", "left", "pleural",
              "effusion", ".", "<eos>"]
    out = positive_sentences(tokens)
    assert out == [("effusion", {"status": "positive", "side": "left", "size": "small"},
                    [7, 8, 9, 10])]


def test_grounded_scores_by_hand():
    N = 4
    masks = torch.zeros(2, len(RENDERED_FINDINGS), N)
    eff = RENDERED_FINDINGS.index("effusion")
    masks[0, eff, :2] = 1
    truth = [labels(effusion=("left", "small")), labels()]
    attn = torch.zeros(2, 6, N)
    attn[0, 1] = torch.tensor([0.7, 0.1, 0.1, 0.1])     # mass in mask 0.8
    attn[0, 2] = torch.tensor([0.1, 0.2, 0.6, 0.1])     # mass 0.3, points outside
    attn[1, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    said = {"status": "positive", "side": "left", "size": "small"}
    sentences = [[("effusion", said, [1, 2])],           # correct, mean mass 0.55 > 0.5
                 [("effusion", said, [1])]]              # hallucinated: logically wrong
    g = grounded_scores(sentences, truth, masks, attn)
    assert g["grounded_logical_precision"] == 0.5 and g["grounded_spatial_precision"] == 0.5
    assert g["grounded_logical_recall"] == 1.0 and g["grounded_spatial_recall"] == 1.0
    assert g["pointing_game"] == 0.5 and g["attention_mass"] == pytest.approx(0.55)
    assert g["pointing_game_chance"] == 0.5
    # the same sentence with its attention elsewhere is logically right but spatially wrong
    attn[0, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5])
    g = grounded_scores(sentences, truth, masks, attn)
    assert g["grounded_logical_precision"] == 0.5 and g["grounded_spatial_precision"] == 0.0
    assert g["grounded_spatial_recall"] == 0.0
    # a wrong side is not logically entailed
    wrong = [[("effusion", dict(said, side="right"), [1, 2])], []]
    assert grounded_scores(wrong, truth, masks, attn)["grounded_logical_precision"] == 0.0


def test_baseline_grounding_by_hand():
    pixels = torch.tensor([[[0.1], [0.9], [0.2], [0.3]]])            # (1, 4, 1): patch 1 brightest
    masks = torch.zeros(1, len(RENDERED_FINDINGS), 4)
    masks[0, RENDERED_FINDINGS.index("nodule"), 2] = 1
    masks[0, RENDERED_FINDINGS.index("cardiomegaly"), 1] = 1
    truth = [labels(nodule=("right", None), cardiomegaly=(None, None))]
    b = baseline_grounding(pixels, masks, truth)
    assert b["brightest patch"]["pointing_game"] == 0.5
    assert b["brightest patch"]["grounded_spatial_precision"] == 0.5
    assert b["uniform"]["attention_mass"] == 0.25 and b["uniform"]["grounded_spatial_precision"] == 0
    with pytest.raises(ValueError, match="nothing to point at"):
        baseline_grounding(pixels, masks, [labels()])


KEYS = ("finding_f1_micro", "finding_f1_macro", "laterality_accuracy", "severity_accuracy",
        "hallucination_rate", "omission_rate", "exact_match", "bleu4",
        "grounded_logical_precision", "grounded_spatial_precision", "grounded_spatial_recall",
        "pointing_game", "attention_mass")


def test_model_trains_and_evaluates_on_both_worlds():
    world2 = ml.RenderedChestXrayDataset(48, seed=0)
    torch.manual_seed(0)
    model = ml.default_model(world2, d_model=32, num_layers=1)
    assert (model.config.vocab_size, model.config.n_patches, model.config.d_vision,
            model.config.max_len) == (world2.vocab_size, 64, 64, world2.max_len)
    history = ml.train(model, world2, epochs=2, batch_size=16, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    m = ml.evaluate(model, world2)
    for key in KEYS:
        assert key in m and (math.isnan(m[key]) or 0 <= m[key] <= 1), key
    assert set(m["baselines"]) >= {"uniform", "brightest patch"}
    assert "finding_f1_micro" in m["chance"]
    world1 = ml.SyntheticRadiologyDataset(48, seed=0)
    model1 = ml.default_model(world1, d_model=32, num_layers=1)
    ml.train(model1, world1, epochs=1, batch_size=16, progress=False)
    m1 = ml.evaluate(model1, world1)
    assert "finding_accuracy" in m1 and "finding_f1_micro" not in m1
    with pytest.raises(ValueError, match="not built for this dataset"):
        ml.evaluate(model1, world2)


def test_config_is_the_one_source_of_sizes():
    ds = ml.RenderedChestXrayDataset(4, image_size=32, patch_size=4, seed=0)
    config = ml.ModelConfig.from_dataset(ds, d_model=16, num_heads=2, num_layers=1)
    model = ml.GroundedReportVLM(config)
    assert model.config is config and config.n_patches == 64 and config.d_vision == 16
    logits, attn = model(ds.patches[:2], ds.token_ids[:2])
    assert logits.shape == (2, ds.max_len, ds.vocab_size) and attn[0].shape[-1] == 64
    # the keyword constructor still works, and both give the same parameter shapes
    same = ml.GroundedReportVLM(**vars(config))
    assert [p.shape for p in same.parameters()] == [p.shape for p in model.parameters()]
    with pytest.raises(TypeError, match="does not say"):
        ml.ModelConfig.from_dataset([1, 2, 3])


def test_cross_attention_runs_the_graded_function(monkeypatch):
    from medsight_lab import model as model_module
    calls = []
    real = model_module.multi_head_attention
    monkeypatch.setattr(model_module, "multi_head_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model = ml.default_model(ml.SyntheticRadiologyDataset(2, seed=0), num_layers=2)
    model(torch.zeros(1, 16, 64), torch.ones(1, 5, dtype=torch.long))
    assert len(calls) == 2


def test_text_tables_and_sentence_figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsight_lab import visualise as vis
    from medsight_lab.rendered_metrics import (HEADLINE, format_against_targets,
                                               format_per_finding, grounded_sentences)
    ds = ml.RenderedChestXrayDataset(12, seed=2)
    torch.manual_seed(0)
    model = ml.default_model(ds, d_model=16, num_heads=2, num_layers=1)
    m = ml.evaluate(model, ds)
    table = format_against_targets(m).splitlines()
    assert len(table) == 1 + len(HEADLINE) and table[1].split()[0] == "finding_f1_micro"
    assert table[1].endswith(">= 0.95")
    assert len(format_per_finding(m).splitlines()) == 1 + len(RENDERED_FINDINGS)
    written = grounded_sentences(model, ds, [0, 1])
    assert [w["report"] for w in written] == m["reports"][:2]
    # a hand-made positive sentence draws one panel with the film's mask outlined
    fake = [{"report": "", "sentences": [{"finding": "effusion", "attention": torch.ones(64) / 64,
                                          "label": {"status": "positive", "side": "left",
                                                    "size": "small"}, "mass": 0.1}]}]
    fig = vis.plot_sentence_attention(ds, [0], fake)
    assert fig.axes[0].get_title() == "film 0: effusion (left)"
    with pytest.raises(ValueError, match="no positive sentence"):
        vis.plot_sentence_attention(ds, [0], [{"report": "", "sentences": []}])
    plt.close("all")
