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
from .training import load_checkpoint, pick_device, save_checkpoint, set_seed, train

__version__ = "0.1.0"
__all__ = [
    "FINDINGS", "GROUNDED_WORDS", "VOCAB", "SyntheticRadiologyDataset", "Tokenizer", "as_batch",
    "collate", "finding_masks", "GenerationOutput", "generate", "attention_entropy", "compute_loss",
    "grounding_loss", "shifted_cross_entropy", "corpus_bleu", "evaluate", "grounding_scores",
    "label_report", "GroundedReportVLM", "ModelConfig", "cached_attention_step", "causal_mask",
    "future_leak",
    "multi_head_attention", "load_checkpoint", "pick_device", "save_checkpoint", "set_seed",
    "train", "default_model",
]


def default_model(dataset=None, **overrides) -> GroundedReportVLM:
    """The course's model (the reference's sizes) for `dataset`'s vocabulary and lengths."""
    sizes = dict(d_vision=64, d_model=64, num_heads=4, num_layers=2, vocab_size=len(VOCAB),
                 max_len=20, n_patches=16)
    if dataset is not None:
        base = getattr(dataset, "dataset", dataset)  # a Subset keeps its parent in .dataset
        sizes.update(d_vision=base.d_vision, max_len=base.max_len, n_patches=base.n_patches)
    sizes.update(overrides)
    return GroundedReportVLM(**sizes)
