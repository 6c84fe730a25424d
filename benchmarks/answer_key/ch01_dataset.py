"""Measurements behind the chapter 1 answer key (MedSight Lab).

Run with the course's environment:
    python benchmarks/answer_key/ch01_dataset.py
One CPU thread; four 15-epoch training runs, about 3 minutes on a shared 2-core machine.
Data: chapter 4's sets (1,600 training images, seed 0; 400 held-out images, seed 1).
Every training run: ml.set_seed(0), ml.default_model, ml.train(epochs=15, seed=0) with the
course's default loss (KL grounding, weight 1.0); only what the comment names is changed.

Q1  brightness and count alone (a permutation-invariant classifier on sorted patch norms);
    a decoder without patch positions, on the data as it is and with the nodule moved to 3 and 7;
    a decoder with patch positions trained and tested on the moved data.
Q2  tokenizer behaviours a round trip over the five reports does or does not see.
Q3  a model trained with the reference's every-word mask: where do its rows look?
"""

import copy
import re
import time

import torch

import medsight_lab as ml
from medsight_lab import reference
from medsight_lab.data import GROUNDED_WORDS
from medsight_lab.metrics import free_running

torch.set_num_threads(1)
NAMES = [name for name, _ in ml.FINDINGS.values()]
train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
val_set = ml.SyntheticRadiologyDataset(400, seed=1)
T0 = time.time()


def train(dataset, **model_options):
    ml.set_seed(0)
    model = ml.default_model(dataset, **model_options)
    ml.train(model, dataset, epochs=15, seed=0, progress=False)
    return model


def confusion(model, dataset):
    """rows: true finding; columns: the labeler's reading of the generated report
    (a report read as anything but exactly one finding counts in the last column)."""
    labels = free_running(model, dataset.patches)[2]
    table = torch.zeros(5, 6, dtype=torch.long)
    for k, lab in zip(dataset.finding_idx.tolist(), labels):
        col = NAMES.index(next(iter(lab))) if len(lab) == 1 else 5
        table[k, col] += 1
    return table


def show_confusion(title, table):
    print(f"  {title}")
    print("    true \\ read   " + " ".join(f"{n[:6]:>6}" for n in NAMES) + "  other")
    for k, name in enumerate(NAMES):
        print(f"    {name:13s} " + " ".join(f"{v:6d}" for v in table[k].tolist()))
    print(f"    finding accuracy: {table.diagonal().sum().item() / table.sum().item():.4f}")


def moved(dataset):
    """The nodule's two lesion patches moved to the pneumothorax's place: patch 0 <-> 3 and
    1 <-> 7 in every nodule image (its brightness kept), lesion and grounding masks moved along."""
    out = copy.copy(dataset)
    rows = dataset.finding_idx == 1
    src, dst = [0, 1, 3, 7], [3, 7, 0, 1]
    out.patches = dataset.patches.clone()
    out.lesion_mask = dataset.lesion_mask.clone()
    out.finding_mask = dataset.finding_mask.clone()
    for name in ("patches", "lesion_mask"):
        t = getattr(out, name)
        t[rows.nonzero().flatten()[:, None], torch.tensor(dst)] = \
            getattr(dataset, name)[rows][:, src]
    fm = out.finding_mask
    fm[rows.nonzero().flatten()[:, None], :, torch.tensor(dst)] = \
        dataset.finding_mask[rows][:, :, src].transpose(1, 2)
    return out


print("== Q1: what a model without patch positions can still tell apart ==")
norms = train_set.patches.norm(dim=-1)                                # (n, 16)
for k, name in enumerate(NAMES):
    for p, std, shift in ml.SyntheticRadiologyDataset.LESIONS[k]:
        v = norms[train_set.finding_idx == k, p]
        print(f"  {name:13s} patch {p:2d}: norm mean {v.mean():5.1f}, sd {v.std():4.1f}, "
              f"range [{v.min():4.1f}, {v.max():4.1f}]")
bg = norms[train_set.lesion_mask == 0]
print(f"  background patches: norm mean {bg.mean():.2f}, max {bg.max():.2f}")
bright = (norms > 10).sum(-1)
for k, name in enumerate(NAMES):
    print(f"  {name:13s} patches with norm > 10 per image: "
          f"{sorted(set(bright[train_set.finding_idx == k].tolist()))}")
nod, ptx = train_set.finding_idx == 1, train_set.finding_idx == 4
print(f"  brightest patch: nodule max {norms[nod].max(1).values.max():.1f}, "
      f"pneumothorax min {norms[ptx].max(1).values.min():.1f}; "
      f"sum of the two brightest: nodule max {norms[nod].topk(2).values.sum(1).max():.1f}, "
      f"pneumothorax min {norms[ptx].topk(2).values.sum(1).min():.1f}")

# A classifier that never sees which patch is which: nearest centroid on the sorted norms.
feat_tr = train_set.patches.norm(dim=-1).sort(dim=-1, descending=True).values
feat_va = val_set.patches.norm(dim=-1).sort(dim=-1, descending=True).values
centroids = torch.stack([feat_tr[train_set.finding_idx == k].mean(0) for k in range(5)])
pred = torch.cdist(feat_va, centroids).argmin(1)
table = torch.zeros(5, 6, dtype=torch.long)
for t, p in zip(val_set.finding_idx.tolist(), pred.tolist()):
    table[t, p] += 1
show_confusion("nearest centroid on sorted patch norms (held-out images):", table)

no_pos = train(train_set, patch_positions=False)
show_confusion("decoder without patch positions, held-out images as they are:",
               confusion(no_pos, val_set))
val_moved = moved(val_set)
show_confusion("the same decoder, held-out images with the nodule moved to 3 and 7:",
               confusion(no_pos, val_moved))
same = torch.equal(no_pos.generate(val_set.patches).token_ids,
                   no_pos.generate(val_moved.patches).token_ids)
print("  same generated reports for all 400 images, moved or not:", same)
with_pos_moved = train(moved(train_set))
show_confusion("decoder WITH patch positions, trained and tested with the nodule moved:",
               confusion(with_pos_moved, val_moved))
print(f"  (elapsed {time.time() - T0:.0f} s)")

print("\n== Q2: tokenizer tests ==")
tok = ml.Tokenizer()
_WORD = re.compile(r"[a-z]+|[.,\-]")


def lenient_encode(text):
    """The course's splitting, but the reference's rule for an unknown word: id 0 (<pad>)."""
    return [1] + [tok.word2idx.get(w, 0) for w in _WORD.findall(text.lower())] + [2]


print("  lenient tokenizer: round trip exact on all five reports:",
      all(tok.decode(lenient_encode(r)) == r for _, r in ml.FINDINGS.values()))
print("  lenient tokenizer: 'There is a large nodule.' ->", lenient_encode("There is a large nodule."),
      "->", repr(tok.decode(lenient_encode("There is a large nodule."))))
try:
    tok.encode("There is a large nodule.")
except ValueError as err:
    print("  course tokenizer raises:", err)
print("  pinned ids: encode('left') =", tok.encode("left"), "| encode('Left-sided.') =",
      tok.encode("Left-sided."))
for text in ("There is a moderate left\u2013sided pleural effusion.",   # an en dash
             "There is a small nodule; 3."):
    try:
        print(f"  course tokenizer on {text!r}: no error (a bug), decodes to "
              f"{tok.decode(tok.encode(text))!r}")
    except ValueError as err:
        print("  course tokenizer refuses it:", err)
ref = reference.SyntheticRadiologyDataset(n_samples=0)
long_text = " ".join(["there"] * 19)
ref_ids = ref._tokenize(long_text)
ref_words = " ".join(ref.VOCAB[i] for i in ref_ids if i > 2)
print(f"  reference tokenizer, 19 words: {len(ref_ids)} ids, <eos> kept: {2 in ref_ids}; "
      f"words round-trip: {ref_words == long_text}")

print("\n== Q3: the reference's every-word mask ==")
every_word = copy.copy(train_set)
# The reference's rule (ground every token with id > 2) on the course's tokens, images with a
# lesion only: the punctuation tokens '.', ',' and '-' (ids 33-35) are grounded too.
every_word.finding_mask = ((train_set.token_ids > 2).float()[:, :, None]
                           * train_set.lesion_mask[:, None, :])
course = train(train_set)
ref_mask_model = train(every_word)
print(f"  (elapsed {time.time() - T0:.0f} s)")

PUNCT = {".", ",", "-"}


def token_class(word):
    if word in ("<bos>", "<eos>"):
        return word
    if word in PUNCT:
        return "punctuation"
    return "finding/side/size word" if word in GROUNDED_WORDS else "other word"


@torch.no_grad()
def lesion_scores_by(model, dataset, group):
    """Teacher-forced, last layer, mean of heads, over held-out images with a lesion: attention
    mass inside the lesion, pointing game and row count per group(word READ at that position);
    words whose group is None are skipped."""
    model.eval()
    _, attn = model(dataset.patches, dataset.token_ids)
    a = attn[-1].mean(1)                                               # (B, T, N)
    sums = {}
    for i in range(len(dataset)):
        lesion = dataset.lesion_mask[i]
        if not lesion.any():
            continue
        for t, word in enumerate(dataset.decode_tokens(dataset.token_ids[i])):
            key = group(word)
            if key is None:
                continue
            row = a[i, t]
            m, hit, n = sums.get(key, (0.0, 0.0, 0))
            sums[key] = (m + (row * lesion).sum().item(), hit + lesion[row.argmax()].item(), n + 1)
    return {k: (m / n, h / n, n) for k, (m, h, n) in sums.items()}


def other_word(word):
    return word if token_class(word) == "other word" else None


chance = (val_set.lesion_mask.sum(-1)[val_set.lesion_mask.any(-1)] / 16).mean().item()
print(f"  uniform attention would put {chance:.3f} of its mass inside the lesion (these images)")
for label, model in (("course mask (finding, side, size words)", course),
                     ("reference rule (every token with id > 2)", ref_mask_model)):
    print(f"  {label}:")
    for c, (m, h, n) in sorted(lesion_scores_by(model, val_set, token_class).items()):
        print(f"    rows reading {c:24s} mass in lesion {m:.3f}   pointing game {h:.3f}   ({n} rows)")
    print("    rows reading each non-finding word (mass in lesion):",
          ", ".join(f"{w} {m:.3f}"
                    for w, (m, _, _) in lesion_scores_by(model, val_set, other_word).items()))
    ev = ml.evaluate(model, val_set)
    print(f"    free-running: exact match {ev['exact_match']:.4f}, finding accuracy "
          f"{ev['finding_accuracy']:.4f}, attention mass of generated finding words "
          f"{ev['attention_mass']:.3f}")

print("\n== Q4: how the course model spreads 'heart' and 'enlarged' over the cardiomegaly lesion ==")
with torch.no_grad():
    _, attn = course(val_set.patches, val_set.token_ids)
a = attn[-1].mean(1)
cardio = (val_set.finding_idx == 3).nonzero().flatten()
words = val_set.decode_tokens(val_set.token_ids[cardio[0]])
for w in ("heart", "enlarged", "cardiomegaly"):
    t = words.index(w)
    rows = a[cardio, t]                                                # (n, 16)
    print(f"  row reading {w!r:15s} mean weight on patches 5, 6, 9, 10: "
          + ", ".join(f"{v:.3f}" for v in rows[:, [5, 6, 9, 10]].mean(0).tolist())
          + f"   (mass outside: {1 - rows[:, [5, 6, 9, 10]].sum(1).mean():.4f}, {len(cardio)} images)")
print(f"\n(total {time.time() - T0:.0f} s)")
