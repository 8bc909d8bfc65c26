"""
Every downstream head learns a tiny separable problem in a few dozen steps: the training loss falls and held-out
accuracy (retrieval R@1, caption word accuracy) rises from chance to near perfect. A head whose classifier input is
cut off from the encoder, or whose labels are misread, stays near chance and fails here.

The images are single regions whose features are a class prototype plus noise; where it matters, the label depends
on the text and the image together, so neither modality alone (nor a frozen, random encoder) solves the problem.
"""

import torch
from torch.nn import functional as F

from vlmixer.modeling_vlmixer import (
    VLMixerForCaptioning,
    VLMixerForImageTextRetrieval,
    VLMixerForQuestionAnswering,
    VLMixerForSequenceClassification,
    VLMixerForVisualReasoning,
)

from .conftest import tiny_config


CLS, SEP, IMG = 101, 102, 1
FEATURE_DIM = 16
NOISE = 0.3
FIRST_WORD = 20  # ids of the words the problems use: far from the special tokens
PROTOTYPES = 2.0 * torch.randn(8, FEATURE_DIM, generator=torch.Generator().manual_seed(7))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def regions_of(classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N,) class ids -> (N, FEATURE_DIM) region features: the class prototype plus noise."""
    return PROTOTYPES[classes] + NOISE * torch.randn(len(classes), FEATURE_DIM, generator=generator)


def word_and_region(words: torch.Tensor) -> torch.Tensor:
    """(B,) word ids -> (B, 5) `[CLS] word [SEP] region [SEP]`, the processor's layout of a one-word text with one
    region."""
    batch = len(words)
    return torch.stack([torch.full((batch,), CLS), words, torch.full((batch,), SEP), torch.full((batch,), IMG),
                        torch.full((batch,), SEP)], dim=1)  # fmt: skip


def make(cls, **overrides):
    torch.manual_seed(0)
    return cls(tiny_config(**overrides)).train()


def fit(model, next_batch, steps: int, lr: float) -> list[float]:
    """`steps` AdamW steps on batches from `next_batch(step)`; the training losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        loss = model(**next_batch(step)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def assert_learned(losses: list[float], before: float, after: float, chance: float, reached: float) -> None:
    """The loss fell by half or more, and accuracy went from about chance to at least `reached`."""
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"training loss {first:.3f} -> {last:.3f}"
    assert before < chance + 0.2, f"accuracy {before:.2f} before training, chance {chance:.2f}"
    assert after >= reached, f"accuracy {before:.2f} -> {after:.2f}, chance {chance:.2f}"


def logits_of(model, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = model(**{name: value for name, value in batch.items() if name != "labels"}).logits
    model.train()
    return logits


def accuracy(model, batch: dict, truth: torch.Tensor, position: int | None = None) -> float:
    """Share of the (B,) `truth` that the top logits hit (at sequence `position` for captions)."""
    logits = logits_of(model, batch)
    if position is not None:
        logits = logits[:, position]
    return (logits.argmax(-1) == truth).float().mean().item()


def fit_and_check(model, held_out: dict, truth: torch.Tensor, next_batch, steps: int, chance: float, reached: float,
                  position: int | None = None) -> None:
    """Trains `steps` steps at lr 3e-3 and checks the loss and the held-out accuracy (see `assert_learned`)."""
    before = accuracy(model, held_out, truth, position)
    losses = fit(model, next_batch, steps=steps, lr=3e-3)
    assert_learned(losses, before, accuracy(model, held_out, truth, position), chance, reached)


# ---------------------------------------------------------------------------------------------- one image, a class


def entailment_batch(size: int, seed: int) -> dict:
    """Hypothesis word h and region class r in {0, 1, 2}; label (r - h) mod 3 (0 entailment, 1 neutral, 2
    contradiction): the label needs both."""
    generator = seeded(seed)
    hypotheses = torch.randint(0, 3, (size,), generator=generator)
    classes = torch.randint(0, 3, (size,), generator=generator)
    return dict(input_ids=word_and_region(FIRST_WORD + hypotheses), visual_features=regions_of(classes, generator),
                labels=(classes - hypotheses) % 3)  # fmt: skip


def test_sequence_classification_learns_text_image_entailment():
    model = make(VLMixerForSequenceClassification, num_labels=3)
    held_out = entailment_batch(96, seed=1000)
    fit_and_check(model, held_out, held_out["labels"], lambda step: entailment_batch(32, seed=step), steps=320,
                  chance=1 / 3, reached=0.9)  # fmt: skip


ANSWERS = 5


def vqa_batch(size: int, seed: int) -> dict:
    """Question word q in {0, 1}, region class r in {0, ..., 4}; the one right answer (r + q) mod 5 gets soft score 1:
    what the question asks decides which answer the region means."""
    generator = seeded(seed)
    questions = torch.randint(0, 2, (size,), generator=generator)
    classes = torch.randint(0, ANSWERS, (size,), generator=generator)
    return dict(input_ids=word_and_region(FIRST_WORD + questions), visual_features=regions_of(classes, generator),
                labels=F.one_hot((classes + questions) % ANSWERS, ANSWERS).float())  # fmt: skip


def test_question_answering_learns_answers_from_question_and_region():
    model = make(VLMixerForQuestionAnswering, num_labels=ANSWERS)
    held_out = vqa_batch(100, seed=1000)
    fit_and_check(model, held_out, held_out["labels"].argmax(-1), lambda step: vqa_batch(32, seed=step), steps=160,
                  chance=1 / ANSWERS, reached=0.9)  # fmt: skip


def test_question_answering_starts_every_answer_at_the_one_answer_prior():
    """The answer scores start near 1 / num_labels, so the binary cross-entropy starts near its value for the answer
    prior (log num_labels + 1 per question, ViLT's scale) instead of num_labels * ln 2."""
    model = make(VLMixerForQuestionAnswering, num_labels=20)
    batch = vqa_batch(64, seed=0)
    batch["labels"] = F.pad(batch["labels"], (0, 15))
    model.eval()
    with torch.no_grad():
        outputs = model(**batch)
    assert abs(torch.sigmoid(outputs.logits).mean().item() - 1 / 20) < 0.02
    assert outputs.loss.item() < 20 * 0.693 / 2


# ---------------------------------------------------------------------------------------------- two images


def reasoning_batch(size: int, seed: int) -> dict:
    """
    The statement "the two scenes show the same item", one region of class 0 or 1 in each image: true (1) when both
    classes agree. XOR of the two images: no single image tells anything, and a classifier of the two pooled states
    concatenated (ViLT's) stayed at chance on it for 300 steps. The statement goes with each image (`(B, 2, 5)` ids),
    the regions in the order of `input_ids.view(2 * B, 5)`.
    """
    generator = seeded(seed)
    classes = torch.randint(0, 2, (size, 2), generator=generator)
    ids = word_and_region(torch.full((2 * size,), FIRST_WORD)).view(size, 2, 5)
    return dict(input_ids=ids, visual_features=regions_of(classes.reshape(-1), generator),
                labels=(classes[:, 0] == classes[:, 1]).long())  # fmt: skip


def test_visual_reasoning_learns_a_relation_between_the_two_images():
    model = make(VLMixerForVisualReasoning, num_labels=2)
    held_out = reasoning_batch(96, seed=1000)
    fit_and_check(model, held_out, held_out["labels"], lambda step: reasoning_batch(32, seed=step), steps=40,
                  chance=0.5, reached=0.9)  # fmt: skip


# ---------------------------------------------------------------------------------------------- texts and images


CLASSES = 6


def text_rows(classes: torch.Tensor) -> torch.Tensor:
    """(B,) class ids -> (B, 3) `[CLS] name [SEP]`, the class's own word."""
    batch = len(classes)
    return torch.stack([torch.full((batch,), CLS), FIRST_WORD + classes, torch.full((batch,), SEP)], dim=1)


def pairs_batch(classes: torch.Tensor, seed: int) -> dict:
    """Text i names the class of image i's one region: `input_ids` (B, 3), `visual_features` (B, 1, D)."""
    return dict(input_ids=text_rows(classes), visual_features=regions_of(classes, seeded(seed)).unsqueeze(1),
                region_mask=torch.ones(len(classes), 1, dtype=torch.long))  # fmt: skip


def retrieval_recall_and_matching(model, held_out: dict) -> tuple[float, float]:
    """Text-to-image R@1 of the contrastive similarities, and the matching head's accuracy on the matched pairs and
    on every text paired with the next image (a mismatch)."""
    model.eval()
    with torch.no_grad():
        outputs = model(**held_out)
        mismatched = model(**{**held_out, "visual_features": held_out["visual_features"].roll(1, dims=0)})
    model.train()
    truth = torch.arange(len(held_out["input_ids"]))
    recall = (outputs.logits_per_text.argmax(-1) == truth).float().mean().item()
    matched_right = outputs.logits.argmax(-1) == 1
    mismatched_right = mismatched.logits.argmax(-1) == 0
    return recall, torch.cat([matched_right, mismatched_right]).float().mean().item()


def test_retrieval_learns_to_pair_names_with_regions():
    model = make(VLMixerForImageTextRetrieval)
    held_out = pairs_batch(torch.arange(CLASSES), seed=1000)

    def next_batch(step):  # every class once per batch: the other pairs are the negatives
        return {**pairs_batch(torch.randperm(CLASSES, generator=seeded(step)), seed=step), "return_loss": True}

    recall_before, matching_before = retrieval_recall_and_matching(model, held_out)
    losses = fit(model, next_batch, steps=120, lr=3e-3)
    recall, matching = retrieval_recall_and_matching(model, held_out)
    assert_learned(losses, recall_before, recall, chance=1 / CLASSES, reached=0.99)
    assert matching_before < 0.75 and matching >= 0.85, f"matching accuracy {matching_before:.2f} -> {matching:.2f}"


def caption_batch(size: int, seed: int) -> dict:
    """Image of class c -> caption `[CLS] name_c [SEP]`, labels the caption itself (the model shifts them)."""
    generator = seeded(seed)
    classes = torch.randint(0, CLASSES, (size,), generator=generator)
    ids = text_rows(classes)
    return dict(input_ids=ids, visual_features=regions_of(classes, generator).unsqueeze(1),
                region_mask=torch.ones(size, 1, dtype=torch.long), labels=ids)  # fmt: skip


def test_captioning_learns_to_name_the_region():
    model = make(VLMixerForCaptioning)
    held_out = caption_batch(96, seed=1000)
    # position 0 ([CLS]) predicts the name, the word the image decides (the [SEP] after it ends every caption)
    fit_and_check(model, held_out, held_out["input_ids"][:, 1], lambda step: caption_batch(32, seed=step), steps=60,
                  chance=1 / CLASSES, reached=0.95, position=0)  # fmt: skip
