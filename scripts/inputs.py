"""Where the scripts' inputs enter (issue 13): numeric option ranges, JSON options, tokenizers and weights, each
refused in one line that names the problem, before anything is trained or written."""

import argparse
import json
import math

import torch


class InputError(ValueError):
    """An input the scripts refuse: the message names the option or file and the problem, in one line."""


def require(parser: argparse.ArgumentParser, args, rules: dict) -> None:
    """`rules`: option name -> (predicate, what it must be); `parser.error` (exit 2, one line) for the first broken."""
    for name, (ok, must_be) in rules.items():
        value = getattr(args, name)
        try:
            fine = value is None or (not isinstance(value, bool) and ok(value))
        except TypeError:  # a string from a --config file, say
            fine = False
        if not fine:
            parser.error(f"--{name} must be {must_be}, got {value!r}")


POSITIVE = (lambda value: value >= 1, "a positive integer")
NON_NEGATIVE = (lambda value: value >= 0, "0 or more")
PROBABILITY = (lambda value: 0.0 <= value <= 1.0, "in [0, 1]")
FINITE_POSITIVE = (lambda value: math.isfinite(value) and value > 0, "a positive number")


def json_object(parser: argparse.ArgumentParser, option: str, text: str) -> dict:
    """The JSON object an option holds, or `parser.error` saying why it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        parser.error(f"{option} is not valid JSON ({error}): {text!r}")
    if not isinstance(value, dict):
        parser.error(f"{option} must be a JSON object such as '{{\"mlm_loss_weight\": 1.0}}', got {text!r}")
    return value


def check_tokenizer(tokenizer, vocab_size: int, source: str) -> None:
    """
    Refuses a tokenizer that cannot be the model's: fewer than half the model's vocabulary (a folder without
    tokenizer.json / vocab.txt loads a tokenizer of its 5 special tokens, which turns every word into [UNK]), more
    ids than the model's embeddings hold, or without the [CLS] / [SEP] / [MASK] / [PAD] tokens the model uses.
    """
    size = len(tokenizer)
    if size > vocab_size:
        raise InputError(f"The tokenizer of {source} has {size} tokens, more than the model's {vocab_size} embeddings.")
    if size < vocab_size // 2:
        raise InputError(
            f"The tokenizer of {source} has {size} tokens for a model of {vocab_size}: its tokenizer files "
            "(tokenizer.json or vocab.txt) are missing or wrong."
        )
    missing = [name for name in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tokenizer, name) is None]
    if missing:
        raise InputError(f"The tokenizer of {source} lacks the special tokens {missing}.")


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Refuses weights holding NaN or infinite values (a damaged file: 0xFF bytes are NaN in every float format)."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"The weights loaded from {source} are damaged: {name} holds NaN or infinite values.")


__all__ = ["InputError", "check_finite_weights", "check_tokenizer", "json_object", "require"]
