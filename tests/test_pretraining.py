"""VLMixerForPreTraining and scripts/pretrain.py: losses, distributed equivalence, kill-and-resume, determinism."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForPreTraining, AutoTokenizer

from vlmixer.modeling_vlmixer import VLMixerForPreTraining
from vlmixer.processing import ConceptVocabulary, DataCollatorForCMC, DataCollatorForPairs, DataCollatorForTags
from vlmixer.processing import PatchGalleryBuilder, VLMixerProcessor
from vlmixer.processing.processing_vlmixer import efficientnet_image_processor
from vlmixer.processing.streams import GalleryRows

from .conftest import REPO_ROOT, tiny_config


FEATURE_DIM = 16
SENTENCES = [
    "She wore a summer dress with leather sandals.", "A white t-shirt and blue jeans.", "Two bags and a warm coat.",
    "Sneakers under the chair.", "The market closed higher.", "An ankle boot next to a pullover.",
]  # fmt: skip


def tiny_gallery():
    builder = PatchGalleryBuilder("precomputed:test-features", FEATURE_DIM)
    rng = np.random.default_rng(0)
    for concept in ConceptVocabulary.fashion_mnist().labels:
        builder.add(concept, rng.normal(size=(4, FEATURE_DIM)), np.tile([0.0, 0.0, 1.0, 1.0], (4, 1)),
                    np.arange(4), np.ones(4))  # fmt: skip
    return builder.build()


@pytest.fixture(scope="module")
def processor(minilm_path):
    return VLMixerProcessor(AutoTokenizer.from_pretrained(minilm_path), efficientnet_image_processor(32),
                            backbone_id="precomputed:test-features", concepts=ConceptVocabulary.fashion_mnist(),
                            gallery=tiny_gallery())  # fmt: skip


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VLMixerForPreTraining(tiny_config(vocab_size=30522, max_position_embeddings=128))


def text_batch(processor, seed: int = 0):
    return DataCollatorForCMC(processor, cmc_ratio=1.0, mlm_probability=0.3, seed=seed)([{"text": s} for s in SENTENCES])


def test_text_stream_reports_each_loss_and_their_weighted_sum(model, processor):
    batch = text_batch(processor)
    outputs = model(**batch)
    names = ("mlm_loss", "patch_word_loss", "contrastive_loss", "patch_alignment_loss")
    parts = {name: getattr(outputs, name).item() for name in names}
    assert all(np.isfinite(v) and v > 0 for v in parts.values())
    assert float(outputs.loss) == pytest.approx(sum(parts.values()), rel=1e-5)
    assert outputs.text_embeds.shape == outputs.mixed_embeds.shape == (len(SENTENCES), 16)
    torch.testing.assert_close(outputs.text_embeds.norm(dim=-1), torch.ones(len(SENTENCES)))

    model.config.contrastive_loss_weight, model.config.patch_word_loss_weight = 0.0, 2.0
    reweighted = model(**batch)
    assert reweighted.contrastive_loss is None
    expected = parts["mlm_loss"] + 2 * parts["patch_word_loss"] + parts["patch_alignment_loss"]
    assert float(reweighted.loss) == pytest.approx(expected, rel=1e-5)
    model.config.patch_alignment_loss_weight = 0.0
    assert model(**batch).patch_alignment_loss is None


def test_patch_alignment_compares_each_patch_with_the_word_it_replaced(model, processor):
    batch = text_batch(processor)
    mixed_hidden = model.vlmixer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 position_ids=batch["position_ids"], visual_features=batch["visual_features"],
                                 visual_boxes=batch["visual_boxes"]).last_hidden_state  # fmt: skip
    original_hidden = model.vlmixer(input_ids=batch["original_input_ids"],
                                    attention_mask=batch["original_attention_mask"]).last_hidden_state  # fmt: skip
    distances, spans = [], []
    for row, slot in (batch["input_ids"] == processor.image_token_id).nonzero().tolist():
        first, end = int(batch["position_ids"][row, slot]), int(batch["position_ids"][row, slot + 1])
        assert int(batch["original_input_ids"][row, first]) == int(batch["patch_word_labels"][row, slot])
        spans.append(processor.tokenizer.decode(batch["original_input_ids"][row, first:end]))
        patch_vector = model.contrastive.projection(mixed_hidden[row, slot])
        word_vector = model.contrastive.projection(original_hidden[row, first:end].mean(dim=0))
        distances.append(1 - torch.cosine_similarity(patch_vector, word_vector, dim=0))
    assert "t - shirt" in spans and "ankle boot" in spans  # whole multi-piece words are the targets
    expected = torch.stack(distances).mean()
    got = model.patch_alignment_loss(mixed_hidden, original_hidden, batch["input_ids"], batch["position_ids"])
    torch.testing.assert_close(got, expected)
    got.backward()
    assert model.vlmixer.embeddings.visual.feature_projection.weight.grad is not None


def test_vocabulary_logits_only_at_labelled_positions(model, processor):
    batch = text_batch(processor)
    seen = []
    model.cls.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    model(**batch)
    labelled = int((batch["labels"] != -100).sum())
    patches = int((batch["patch_word_labels"] != -100).sum())
    assert seen == [(labelled, 30522), (patches, 30522)]


def test_tag_and_pair_streams(model, processor):
    rows = [GalleryRows(processor.patch_gallery)[i] for i in range(0, 40, 4)]
    outputs = model(tag_batch=DataCollatorForTags(processor)(rows), pair_batch=DataCollatorForPairs(processor)(rows))
    assert outputs.mlm_loss is None and outputs.contrastive_loss is None
    paired = outputs.paired_mlm_loss + outputs.paired_contrastive_loss + outputs.paired_matching_loss
    total = outputs.tag_mlm_loss + paired
    torch.testing.assert_close(outputs.loss, total)
    assert 0 < float(outputs.paired_matching_loss) < 5
    outputs.loss.backward()
    assert model.vlmixer.embeddings.visual.feature_projection.weight.grad.abs().sum() > 0


def test_training_lowers_the_losses(model, processor):
    batch = text_batch(processor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = model(**batch).loss
        first = float(loss) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model(**batch).loss) < 0.75 * first


def test_empty_batch_and_unknown_inputs_are_refused(model, processor):
    with pytest.raises(ValueError, match="no stream with targets"):
        model(input_ids=torch.tensor([[101, 102]]))
    with pytest.raises(TypeError, match="unexpected inputs"):
        model(**text_batch(processor), patch_concept_ids=torch.tensor([1]))


def test_trainer_keeps_dividing_by_accumulation_steps(model):
    assert model.accepts_loss_kwargs is False


def test_saved_pretraining_model_loads_with_auto_classes(model, processor, tmp_path):
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(reloaded) is VLMixerForPreTraining
    batch = text_batch(processor)
    torch.testing.assert_close(reloaded.eval()(**batch).loss, model.eval()(**batch).loss)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModelForPreTraining"].endswith(
        "VLMixerForPreTraining"
    )


# ---------------------------------------------------------------------------------------------- distributed


@pytest.mark.parametrize("split", ["interleaved", "uneven"])
def test_two_processes_give_the_loss_and_gradients_of_one(minilm_path, tmp_path, split):
    """`uneven`: one process's rows hold no visual token. The losses that reduce over all processes (patch-word,
    patch alignment) must still run on both, or the process that skips them leaves the other waiting forever."""
    helper = str(REPO_ROOT / "tests" / "helpers" / "distributed_check.py")
    subprocess.run([sys.executable, helper, str(tmp_path / "one.pt"), minilm_path, split], check=True, timeout=300)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    result = subprocess.run([*launch, helper, str(tmp_path / "two.pt"), minilm_path, split], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    assert (one["world"], two["world"]) == (1, 2)
    for name, value in one["losses"].items():
        torch.testing.assert_close(two["losses"][name], value, atol=1e-5, rtol=1e-5, msg=name)
    assert one["grads"].keys() == two["grads"].keys()
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, atol=2e-5, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------------------------- the script


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain_inputs")
    tiny_gallery().save(folder / "gallery")
    rng = np.random.default_rng(0)
    items = ["dress", "sandals", "bag", "t-shirt", "trousers", "ankle boots", "sneakers", "coat", "shirt", "sweater"]
    lines = [f"She bought a {rng.choice(items)} and a {rng.choice(items)} at the market." for _ in range(120)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n\n")
    # dropout on: the resumed run must restore the random state too
    settings = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=128, visual_feature_dim=FEATURE_DIM, vision_backbone="precomputed",
                    feature_source="test-features", projection_dim=16)  # fmt: skip
    (folder / "model.json").write_text(json.dumps(settings))
    return folder


def pretrain_command(inputs: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO_ROOT / "scripts" / "pretrain.py"), "--text_corpus", str(inputs / "corpus.txt"),
        "--gallery", str(inputs / "gallery"), "--model_config", str(inputs / "model.json"), "--output_dir",
        str(output_dir), "--max_steps", "12", "--batch_size", "8", "--logging_steps", "1", "--checkpointing_steps",
        "3", "--warmup_steps", "2", "--learning_rate", "1e-3", "--stream_weights", "text=1,tags=0.3,pairs=0.3",
        "--no_final_model", *extra,
    ]  # fmt: skip


def logged_losses(output_dir: Path) -> list[dict]:
    with (output_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_killed_run_resumes_exactly_where_it_stopped(run_inputs, tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run(pretrain_command(run_inputs, uninterrupted), check=True, capture_output=True, timeout=600)
    expected = logged_losses(uninterrupted)
    assert [int(row["step"]) for row in expected] == list(range(1, 13))

    killed = tmp_path / "killed"
    process = subprocess.Popen(pretrain_command(run_inputs, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_6" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its step-6 checkpoint"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step_12").exists()

    resumed = subprocess.run(pretrain_command(run_inputs, killed, "--resume_from_checkpoint", "latest"),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    figures = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert figures["resumed_from_step"] >= 6
    assert logged_losses(killed) == expected  # same data order, same losses, to the last digit


def test_resume_without_checkpoint_and_bad_inputs(run_inputs, tmp_path):
    no_checkpoint = subprocess.run(pretrain_command(run_inputs, tmp_path / "fresh", "--resume_from_checkpoint", str(tmp_path)),
                                   capture_output=True, text=True, timeout=300)  # fmt: skip
    assert no_checkpoint.returncode != 0 and "not a complete checkpoint" in no_checkpoint.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    command = pretrain_command(run_inputs, tmp_path / "empty_run")
    command[command.index("--text_corpus") + 1] = str(empty)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "holds no sentence" in result.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------- momentum queue


def info_nce_by_hand(queries, keys, scale):
    """Mean cross-entropy of query i against all keys, key i the positive."""
    return F.cross_entropy(scale * queries @ keys.T, torch.arange(len(queries)))


def test_momentum_queue_is_off_by_default_and_changes_nothing(model, processor):
    assert model.config.momentum_queue_size == 0 and model.momentum is None
    assert not any(key.startswith("momentum") for key in model.state_dict())
    batch = text_batch(processor)
    outputs = model(**batch)
    scale = model.contrastive.logit_scale.exp()
    by_hand = (info_nce_by_hand(outputs.text_embeds, outputs.mixed_embeds, scale)
               + info_nce_by_hand(outputs.mixed_embeds, outputs.text_embeds, scale)) / 2  # fmt: skip
    torch.testing.assert_close(outputs.contrastive_loss, by_hand)
    # Switched on, the first step contrasts against the momentum copy with an empty queue: the same value.
    torch.manual_seed(0)
    config = tiny_config(vocab_size=30522, max_position_embeddings=128, momentum_queue_size=16)
    with_queue = VLMixerForPreTraining(config)
    with_queue.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(with_queue(**batch).contrastive_loss, outputs.contrastive_loss)


def test_momentum_queue_fills_rolls_and_follows_the_encoder(processor, tmp_path):
    torch.manual_seed(0)
    model = VLMixerForPreTraining(tiny_config(vocab_size=30522, max_position_embeddings=128, momentum_queue_size=16,
                                              momentum_coefficient=0.9))  # fmt: skip
    momentum = model.momentum
    assert not any(p.requires_grad for p in momentum.parameters()) and momentum.encoder.vision_backbone is None
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    batches = [text_batch(processor, seed) for seed in range(3)]
    counts, pointers, keys = [], [], []
    for batch in batches:
        before = {name: p.detach().clone() for name, p in momentum.encoder.named_parameters()}
        online = {name: model.vlmixer.get_parameter(name).detach().clone() for name in before}
        queued_text, queued_mixed = (q.clone() for q in momentum.queued())
        outputs = model(**batch)
        name = "encoder.layer.0.attention.self.query.weight"
        if keys:  # from the second step on, the momentum encoder moved 10% of the way to the encoder first
            torch.testing.assert_close(momentum.encoder.get_parameter(name), 0.9 * before[name] + 0.1 * online[name])
        original = {"input_ids": batch["original_input_ids"], "attention_mask": batch["original_attention_mask"]}
        text_keys = momentum.embed(**original)
        mixed_keys = momentum.embed(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    position_ids=batch["position_ids"], visual_features=batch["visual_features"],
                                    visual_boxes=batch["visual_boxes"])  # fmt: skip
        scale = model.contrastive.logit_scale.exp()
        text_to_mixed = info_nce_by_hand(outputs.text_embeds, torch.cat([mixed_keys, queued_mixed]), scale)
        mixed_to_text = info_nce_by_hand(outputs.mixed_embeds, torch.cat([text_keys, queued_text]), scale)
        by_hand = (text_to_mixed + mixed_to_text) / 2
        torch.testing.assert_close(outputs.contrastive_loss, by_hand, atol=1e-5, rtol=1e-5)
        keys.append(text_keys)
        counts.append(int(momentum.queue_count))
        pointers.append(int(momentum.queue_pointer))
        optimizer.zero_grad()
        outputs.loss.backward()
        optimizer.step()
    assert counts == [6, 12, 16] and pointers == [6, 12, 2]  # 6 sentences a step, 16 rows: the third step wraps
    torch.testing.assert_close(momentum.text_queue[12:16], keys[2][:4])
    torch.testing.assert_close(momentum.text_queue[0:2], keys[2][4:])
    torch.testing.assert_close(momentum.text_queue[2:6], keys[0][2:6])  # the oldest that survived
    torch.testing.assert_close(momentum.text_queue[6:12], keys[1])

    model.eval()(**batches[0])  # evaluation reads the queue but neither moves the encoder nor enqueues
    assert (int(momentum.queue_count), int(momentum.queue_pointer)) == (16, 2)
    assert any(key.startswith("momentum.") for key in model.state_dict())  # resumable training states keep it
    model.save_pretrained(tmp_path)
    reloaded, info = VLMixerForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and int(reloaded.momentum.initialized) == 0
    assert not any(p.requires_grad for p in reloaded.momentum.parameters())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as saved:
        assert not any(key.startswith("momentum.") for key in saved.keys())  # noqa: SIM118
    reloaded.eval()(**batches[0])  # the first forward copies the encoder
    torch.testing.assert_close(reloaded.momentum.encoder.get_parameter(name), reloaded.vlmixer.get_parameter(name))
