"""Pre-training data streams: corpora on disk, seeded and resumable batch iteration, and the choice of stream per step.

A `BatchStream` walks a corpus in a seeded order, epoch after epoch, hands each process its share of every global
batch, and can say (and restore) exactly where it is, so a killed run resumes on the very batch it would have seen.
The order depends on the seed and the global batch size only, never on how many processes share the global batch:
process r of N takes the r-th contiguous block of each global batch, and `next_batch(with_keys=True)` names each row
by (epoch, batch of the epoch, row of the global batch), the key from which the collators draw its randomness.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .gallery import PatchGallery


TEXT_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
CHECKPOINT_MANIFEST = "checkpoint.json"  # written last into a pre-training checkpoint (scripts/checkpointing.py)
SNIFF_BYTES = 1 << 20  # how much of a text corpus is checked to be UTF-8 text before loading it


class CorpusError(ValueError):
    """A text corpus that cannot be used: missing, empty, not text, without the column, in an unknown format."""


def check_text_file(source: Path) -> None:
    """Refuses an empty file, or one whose first MiB is not UTF-8 text (a binary file, say)."""
    import codecs

    with source.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head:
        raise CorpusError(f"Text corpus {source} is empty.")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at the end is fine
    except UnicodeDecodeError as error:
        raise CorpusError(f"Text corpus {source} is not UTF-8 text (byte {error.start}: a binary file?).") from None
    if b"\0" in head:
        raise CorpusError(f"Text corpus {source} is not text: it holds NUL bytes (a binary file?).")


def load_text_corpus(path: str, text_column: str = "text", streaming: bool = False):
    """
    Sentences from plain text (one per line), JSON lines, parquet, or a `datasets` folder (`save_to_disk`), as a
    `datasets` Dataset (an IterableDataset when `streaming`) with a `text` column and no empty rows. A corpus that
    is missing, empty, all blank, binary or unreadable raises `CorpusError` naming the file and the problem.
    """
    from datasets import load_dataset, load_from_disk

    source = Path(path)
    if not source.exists():
        raise CorpusError(f"Text corpus {path} does not exist.")
    if not source.is_dir() and source.suffix not in TEXT_SUFFIXES:
        raise CorpusError(f"Unknown corpus format {source.suffix!r}: use .txt, .jsonl, .json, .parquet or a datasets folder.")
    if source.suffix in (".txt", ".jsonl", ".json") and not source.is_dir():
        check_text_file(source)
    try:
        if source.is_dir():
            corpus = load_from_disk(str(source))
            if streaming:
                corpus = corpus.to_iterable_dataset()
        else:
            corpus = load_dataset(TEXT_SUFFIXES[source.suffix], data_files=str(source), split="train", streaming=streaming)
    except Exception as error:  # datasets wraps parse errors in DatasetGenerationError; say what went wrong, once
        cause = error.__cause__ or error.__context__ or error
        first_line = (str(cause).splitlines() or [""])[0]
        raise CorpusError(f"Cannot read text corpus {path}: {type(cause).__name__}: {first_line}") from error
    if not hasattr(corpus, "column_names"):
        raise CorpusError(f"{path} holds several splits ({list(corpus)}); save one split with save_to_disk.")
    if text_column not in (corpus.column_names or [text_column]):
        raise CorpusError(f"{path} has no {text_column!r} column; it has {corpus.column_names}.")
    if text_column != "text":
        corpus = corpus.rename_column(text_column, "text")
    corpus = corpus.filter(lambda row: isinstance(row["text"], str) and bool(row["text"].strip()))
    if not streaming and len(corpus) == 0:
        raise CorpusError(f"Text corpus {path} holds no sentence: it is empty or every row is blank.")
    return corpus


class GalleryRows:
    """Gallery rows as image-only (tags) or paired (caption) examples: one region per row, its concept as tag."""

    def __init__(self, gallery: PatchGallery, caption_templates: list[str] | None = None):
        self.gallery = gallery
        self.templates = caption_templates or ["a photo of a {}."]
        self.concept_of_row = np.repeat(np.arange(len(gallery.concepts)), list(gallery.counts.values()))

    def __len__(self) -> int:
        return len(self.gallery)

    def __getitem__(self, index: int) -> dict:
        concept = self.gallery.concepts[self.concept_of_row[index]]
        rows = np.array([index])
        return {
            "features": self.gallery.features_at(rows),
            "boxes": self.gallery.boxes_at(rows),
            "tags": [concept],
            "text": self.templates[index % len(self.templates)].format(concept),
        }


# Ours, not datasets' interleave_datasets(probabilities=...) + IterableDataset.state_dict() nor torchdata's
# StatefulDataLoader (0.11.0 installs beside torch 2.13): interleave_datasets picks the stream per example (one batch of
# 8 mixed text and tag rows, "ssttssss"), where a step trains one stream, and split_dataset_by_node gives 2 processes
# other global batches than 1 process sees (their first 16 rows differ), which breaks 1-vs-N equality; and batch i of
# a map-style BatchStream is a pure function of i (`batch_at`), so workers and a resumed run need no iterator state.
class BatchStream:
    """
    Endless seeded batches of `batch_size` rows per process from a map-style corpus (reshuffled each epoch) or an
    iterable one (shuffled with a buffer). Process `rank` of `world_size` takes rows rank * batch_size to
    (rank + 1) * batch_size - 1 of every global batch (contiguous, so that gathering the processes' rows in rank order
    gives the global batch in its order, as one process would see it).
    """

    def __init__(self, corpus, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle_buffer: int = 10_000):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
        self.corpus, self.batch_size, self.seed = corpus, batch_size, seed
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.map_style = hasattr(corpus, "__getitem__") and hasattr(corpus, "__len__")
        if self.map_style and len(corpus) < batch_size * world_size:
            raise ValueError(f"The corpus has {len(corpus)} rows, fewer than one global batch ({batch_size * world_size}).")
        self.epoch, self.batches_in_epoch = 0, 0
        self._rows: Iterator | None = None

    def _epoch_rows(self) -> Iterator:
        if self.map_style:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.corpus))
            return (self.corpus[int(i)] for i in order)
        return iter(self.corpus.shuffle(seed=self.seed + self.epoch, buffer_size=self.shuffle_buffer))

    def _start_epoch_at(self, batches_done: int) -> None:
        self._rows = self._epoch_rows()
        global_batch = self.batch_size * self.world_size
        for _ in range(batches_done * global_batch):  # replay, so that the next batch is the one a resumed run expects
            next(self._rows)
        self.batches_in_epoch = batches_done

    def next_batch(self, with_keys: bool = False) -> list[dict] | tuple[list[dict], list[tuple[int, int, int]]]:
        """This process's rows of the next global batch (a short last batch of an epoch is dropped); `with_keys`: and
        each row's key (epoch, batch of the epoch from 1, row of the global batch), the same on any number of
        processes. A corpus whose whole epoch is shorter than one global batch (a tiny streamed one, say) raises
        ValueError."""
        if self._rows is None:
            self._start_epoch_at(self.batches_in_epoch)
        global_batch = self.batch_size * self.world_size
        for _ in range(2):  # the rest of this epoch, then a fresh one
            global_rows = []
            for row in self._rows:
                global_rows.append(row)
                if len(global_rows) == global_batch:
                    self.batches_in_epoch += 1
                    first = self.rank * self.batch_size
                    rows = global_rows[first : first + self.batch_size]
                    if not with_keys:
                        return rows
                    return rows, [(self.epoch, self.batches_in_epoch, first + i) for i in range(self.batch_size)]
            fresh_epoch_too_short = self.batches_in_epoch == 0
            self.epoch += 1
            self._start_epoch_at(0)
            if fresh_epoch_too_short:
                break
        raise ValueError(f"The corpus has {len(global_rows)} rows, fewer than one global batch ({global_batch}).")

    def batches_per_epoch(self) -> int:
        """Full global batches in an epoch of a map-style corpus."""
        return len(self.corpus) // (self.batch_size * self.world_size)

    def position(self) -> int:
        """The index (over all epochs) of the next global batch of a map-style corpus."""
        return self.epoch * self.batches_per_epoch() + self.batches_in_epoch

    def batch_at(self, index: int) -> tuple[list[dict], list[tuple[int, int, int]]]:
        """This process's rows and their keys of global batch `index` (over all epochs) of a map-style corpus, without
        walking to it: what `next_batch(with_keys=True)` gives at that position. A DataLoader worker can collate any
        batch from its index alone."""
        if not self.map_style:
            raise TypeError("batch_at needs a map-style corpus; a streamed one is read in order with next_batch.")
        epoch, within = divmod(index, self.batches_per_epoch())
        if getattr(self, "_order_epoch", None) != epoch:
            self._order, self._order_epoch = np.random.default_rng([self.seed, epoch]).permutation(len(self.corpus)), epoch
        first = within * self.batch_size * self.world_size + self.rank * self.batch_size
        rows = [self.corpus[int(i)] for i in self._order[first : first + self.batch_size]]
        return rows, [(epoch, within + 1, self.rank * self.batch_size + i) for i in range(self.batch_size)]

    def skip_batch(self) -> None:
        """Moves past one global batch without reading it (its rows were read by `batch_at` elsewhere), leaving the
        state `next_batch` would (an epoch's end rolls over at the next batch)."""
        if self.batches_in_epoch == self.batches_per_epoch():
            self.epoch, self.batches_in_epoch = self.epoch + 1, 0
        self.batches_in_epoch += 1
        self._rows = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._rows = state["epoch"], None
        self.batches_in_epoch = state["batches_in_epoch"]


class CollatedBatches:
    """
    The collated batches of a map-style `BatchStream`, from `start` (a global batch index) on, for a
    `torch.utils.data.DataLoader` with workers: item i is `collator(*stream.batch_at(start + i))`, a pure function of
    the index (the collator's randomness comes from the row keys), so workers give exactly the batches the main process
    would, in order, and a resumed run starts again at its stream's `position()`.
    """

    def __init__(self, stream: "BatchStream", collator, start: int, count: int):
        self.stream, self.collator, self.start, self.count = stream, collator, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.collator(*self.stream.batch_at(self.start + index))


class StreamChooser:
    """Picks the stream of each step by weight, seeded, identically on every process."""

    def __init__(self, weights: dict[str, float], seed: int):
        active = {name: weight for name, weight in weights.items() if weight > 0}
        if not active:
            raise ValueError(f"At least one stream needs a positive weight, got {weights}.")
        self.names = list(active)
        self.probabilities = np.array(list(active.values())) / sum(active.values())
        self._rng = np.random.default_rng(seed)

    def next_stream(self) -> str:
        return self.names[self._rng.choice(len(self.names), p=self.probabilities)]

    def state_dict(self) -> dict:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]


def parse_weights(text: str) -> dict[str, float]:
    """"text=1,tags=0.5" -> {"text": 1.0, "tags": 0.5}."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"Cannot read {item!r}: write weights as name=number, comma-separated.") from None
    return weights


def checkpoint_is_complete(folder: Path) -> bool:
    """
    Its manifest, written last, is there and every file it lists has the listed size: a folder cut short while being
    written or copied is not complete (the checksums are checked on loading, not here).
    """
    try:
        files = json.loads((folder / CHECKPOINT_MANIFEST).read_text())["files"]
        return all((folder / name).stat().st_size == entry["size"] for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (`checkpoints/step_N` with a complete manifest), oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = [path for path in root.glob("step_*") if path.name.removeprefix("step_").isdigit()]
    return sorted(filter(checkpoint_is_complete, found), key=lambda path: int(path.name.removeprefix("step_")))


__all__ = ["BatchStream", "CollatedBatches", "CorpusError", "GalleryRows", "StreamChooser", "checkpoint_dirs", "load_text_corpus", "parse_weights"]
