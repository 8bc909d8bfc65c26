"""A picture of cross-modal CutMix: each sentence above its mixed view, with every patch's thumbnail where its word was."""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .processing_vlmixer import VLMixerProcessor


THUMBNAIL_PX = 56
LINE_GAP = 14
MARGIN = 16
BACKGROUND, TEXT, FADED, FRAME = (255, 255, 255), (20, 20, 20), (120, 120, 120), (214, 39, 40)


@dataclass
class Piece:
    """One item of a rendered line: a word, or a patch thumbnail with the concept it stands for."""

    word: str | None = None
    thumbnail: np.ndarray | None = None
    concept: str | None = None


def mixed_pieces(processor: VLMixerProcessor, sentence: str, seed: int, cmc_ratio: float) -> list[Piece]:
    """The mixed view of `sentence` as words (word pieces joined) and patches, in order."""
    batch = processor(text=sentence, seed=seed, cmc_ratio=cmc_ratio, return_tensors="np")
    gallery, tokenizer = processor.patch_gallery, processor.tokenizer
    thumbnails = gallery.thumbnails_at(batch["patch_gallery_indices"]) if len(batch["patch_gallery_indices"]) else None
    concepts = iter(processor.vocabulary.labels[i] for i in batch["patch_concept_ids"])
    patches = iter(range(len(batch["patch_concept_ids"])))
    pieces = []
    for token in tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()):
        if token in (tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token):
            continue
        if token == tokenizer.convert_ids_to_tokens(processor.image_token_id):
            index = next(patches)
            pieces.append(Piece(thumbnail=None if thumbnails is None else thumbnails[index], concept=next(concepts)))
        elif token.startswith("##") and pieces and pieces[-1].word is not None:
            pieces[-1].word += token[2:]
        else:
            pieces.append(Piece(word=token))
    return pieces


def draw_line(canvas: ImageDraw.ImageDraw, image: Image.Image, pieces: list[Piece], top: int, font, small) -> int:
    """Draws one mixed sentence at `top`; returns the y below it."""
    x = MARGIN
    for piece in pieces:
        if piece.word is not None:
            canvas.text((x, top + THUMBNAIL_PX // 2), piece.word, fill=TEXT, font=font, anchor="lm")
            x += int(canvas.textlength(piece.word + " ", font=font))
            continue
        if piece.thumbnail is not None:
            image.paste(Image.fromarray(piece.thumbnail).resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.NEAREST), (x, top))
        canvas.rectangle((x - 1, top - 1, x + THUMBNAIL_PX, top + THUMBNAIL_PX), outline=FRAME, width=2)
        canvas.text((x + THUMBNAIL_PX // 2, top + THUMBNAIL_PX + 3), piece.concept, fill=FRAME, font=small, anchor="mt")
        x += THUMBNAIL_PX + int(canvas.textlength(" ", font=font)) + 4
    return top + THUMBNAIL_PX + LINE_GAP + 14


def render_mixed_sentences(
    processor: VLMixerProcessor, sentences: list[str], path: str, seed: int = 0, cmc_ratio: float = 1.0, width: int = 1000
) -> Image.Image:
    """Renders each sentence (grey) above its mixed view and saves the PNG at `path`."""
    if processor.patch_gallery is None or processor.vocabulary is None:
        raise ValueError("The CMC picture needs a processor with a concept vocabulary and a gallery.")
    font, small = ImageFont.load_default(size=20), ImageFont.load_default(size=12)
    height = MARGIN + len(sentences) * (22 + THUMBNAIL_PX + LINE_GAP + 14 + 10)
    image = Image.new("RGB", (width, height), BACKGROUND)
    canvas = ImageDraw.Draw(image)
    top = MARGIN
    for index, sentence in enumerate(sentences):
        canvas.text((MARGIN, top), sentence, fill=FADED, font=font)
        top = draw_line(canvas, image, mixed_pieces(processor, sentence, seed + index, cmc_ratio), top + 26, font, small)
        top += 10
    image.save(path)
    return image


__all__ = ["render_mixed_sentences", "mixed_pieces"]
