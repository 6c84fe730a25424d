"""MedSight Lab: grounded radiology report generation with cross-attention.

The pipeline, one module per stage: data -> model (+ generation) -> loss -> metrics -> training;
then visualise / explorer for figures, and grading for the course's exercises.
"""

from .data import (FINDINGS, GROUNDED_WORDS, VOCAB, SyntheticRadiologyDataset, Tokenizer,
                   as_batch, collate, finding_masks)
from .generation import GenerationOutput, generate
from .loss import attention_entropy, compute_loss, grounding_loss, shifted_cross_entropy
from .metrics import corpus_bleu, evaluate, grounding_scores, label_report
from .model import (GroundedReportVLM, ModelConfig, cached_attention_step, causal_mask,
                    future_leak, multi_head_attention)
from .labeler import label_findings
from .rendered import RENDERED_FINDINGS, RENDERED_VOCAB, RenderedChestXrayDataset
from .training import load_checkpoint, pick_device, save_checkpoint, set_seed, train
from . import shortcuts  # noqa: E402  (chapter 8: ml.shortcuts)

__version__ = "0.1.0"
__all__ = [
    "FINDINGS", "GROUNDED_WORDS", "VOCAB", "SyntheticRadiologyDataset", "Tokenizer", "as_batch",
    "collate", "finding_masks", "GenerationOutput", "generate", "attention_entropy", "compute_loss",
    "grounding_loss", "shifted_cross_entropy", "corpus_bleu", "evaluate", "grounding_scores",
    "label_report", "GroundedReportVLM", "ModelConfig", "cached_attention_step", "causal_mask",
    "future_leak",
    "multi_head_attention", "load_checkpoint", "pick_device", "save_checkpoint", "set_seed",
    "train", "default_model", "RENDERED_FINDINGS", "RENDERED_VOCAB", "RenderedChestXrayDataset",
    "label_findings",
]


def default_model(dataset=None, **overrides) -> GroundedReportVLM:
    """The course's model (the reference's sizes) for `dataset`'s vocabulary, patches and lengths
    (either world); without a dataset, the first world's sizes."""
    sizes = dict(d_vision=64, d_model=64, num_heads=4, num_layers=2)
    if dataset is None:
        return GroundedReportVLM(ModelConfig(**{**sizes, "vocab_size": len(VOCAB), "max_len": 20,
                                                "n_patches": 16, **overrides}))
    return GroundedReportVLM(ModelConfig.from_dataset(dataset, **{**sizes, **overrides}))
