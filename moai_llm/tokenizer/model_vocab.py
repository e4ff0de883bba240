"""Models follow their tokenizer: grow a model's embedding (and untied output) rows to a bigger
vocabulary, with new tokens starting where the base model already was.

`method="pieces"` (the default when both tokenizers are given): each new token's input and
output rows are the mean of the rows of the pieces the BASE tokenizer splits that token's text
into ("금리" -> "금" + "리"), so the grown model reads and predicts the new token roughly as it
did its pieces and its loss on text that uses the new tokens starts near the base model's.
`method="mean"`: every new row is the mean of all old rows; it keeps the loss from jumping (a
random row would be never or always predicted) but starts each new token knowing nothing.

New tokens are the ids from `len(base_tokenizer)` to `len(new_tokenizer)`. They are initialised
even where the matrix already has rows for them: Qwen's checkpoints carry padding rows beyond
their tokenizer (151,936 rows for 151,669 tokens), and those rows were never trained. Rows
added beyond the new tokenizer (rounding up) are the mean of the old rows; padding rows that
were already there stay as they were. A tied lm_head stays tied to the grown embedding.

    >>> import tempfile, pathlib
    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.modeling import MoaiForCausalLM
    >>> from moai_llm.tokenizer import load_tokenizer, train_tokenizer
    >>> from moai_llm.tokenizer.model_vocab import grow_embeddings
    >>> model = MoaiForCausalLM(MoaiConfig.from_preset("tiny", vocab_size=256))
    >>> path = train_tokenizer(["hello world"] * 20, pathlib.Path(tempfile.mkdtemp()) / "tok", vocab_size=300)
    >>> tokenizer = load_tokenizer(path)
    >>> grew = grow_embeddings(model, len(tokenizer))   # no base tokenizer: new rows = mean
    >>> grew, model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.vocab_size
    (True, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moai_llm.errors import MoaiInputError
from moai_llm.progress import info

METHODS = ("pieces", "mean")


def grow_embeddings(model, new_vocab_size: int, method: str | None = None, base_tokenizer: Any = None,
                    new_tokenizer: Any = None) -> bool:
    """Give `model` at least `new_vocab_size` embedding rows (and lm_head rows) and initialise
    the new tokens' rows (see the module docstring); update `config.vocab_size`; say what was
    done. Tokenizers may be transformers tokenizers, `tokenizers.Tokenizer`s or folders.
    Returns whether anything changed (rows are never removed).

        grow_embeddings(model, 640, "pieces", base_tokenizer="base_tok/", new_tokenizer="finance_tok/")
    """
    import torch

    method = method or ("pieces" if base_tokenizer is not None and new_tokenizer is not None else "mean")
    if method not in METHODS:
        raise MoaiInputError(f"--new-embeddings {method}: unknown method", hint="use pieces or mean")
    if method == "pieces" and (base_tokenizer is None or new_tokenizer is None):
        raise MoaiInputError("--new-embeddings pieces needs the base model's tokenizer and the new one",
                             hint="use a base model folder that holds its tokenizer, or --new-embeddings mean")
    embed = model.get_input_embeddings()
    old_rows = embed.weight.shape[0]
    base = _backend(base_tokenizer) if base_tokenizer is not None else None
    new = _backend(new_tokenizer) if new_tokenizer is not None else None
    first_new = base.get_vocab_size(with_added_tokens=True) if base is not None else old_rows
    last_new = new.get_vocab_size(with_added_tokens=True) if new is not None else max(new_vocab_size, old_rows)
    if base is not None and new is not None:
        _check_extends(base, new, first_new)
        if first_new > old_rows:
            raise MoaiInputError(f"the base tokenizer has {first_new} tokens but the model only {old_rows} rows",
                                 hint="pass the tokenizer the base model was trained with")
    rows = max(old_rows, new_vocab_size, last_new)
    if rows == old_rows and last_new <= first_new:
        return False
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    with torch.no_grad():
        if rows > old_rows:
            new_embed = _grown_embedding(embed, rows)
            model.set_input_embeddings(new_embed)
            if head is not None:
                if tied:
                    head.weight = new_embed.weight
                else:
                    model.set_output_embeddings(_grown_linear(head, rows))
                if getattr(head, "out_features", None) is not None:
                    model.get_output_embeddings().out_features = rows
        if method == "pieces" and last_new > first_new:
            for token_id, pieces in new_token_pieces(base, new, first_new, last_new).items():
                for weight in _matrices(model, tied, head):
                    weight[token_id] = weight[pieces].float().mean(dim=0).to(weight.dtype)
        elif first_new < min(last_new, old_rows):  # new tokens on rows that were there (padding): mean too
            for weight in _matrices(model, tied, head):
                weight[first_new:min(last_new, old_rows)] = weight[:old_rows].float().mean(dim=0).to(weight.dtype)
    model.config.vocab_size = rows
    what = ("the mean of their base-tokenizer pieces' rows" if method == "pieces" else "the mean of the old rows")
    tokens = f"; tokens {first_new}..{last_new - 1} start as {what}" if last_new > first_new else ""
    info(f"model vocabulary: {old_rows} → {rows} rows{tokens}"
         f"{' (lm_head tied)' if tied else ' (lm_head too)' if head is not None else ''}")
    return True


def _matrices(model, tied: bool, head) -> list:
    weights = [model.get_input_embeddings().weight]
    if head is not None and not tied:
        weights.append(model.get_output_embeddings().weight)
    return weights


def _backend(tokenizer: Any):
    """A `tokenizers.Tokenizer` for a transformers tokenizer, a Tokenizer or a folder/file path."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise MoaiInputError(f"{tokenizer}: no tokenizer.json", hint="pass a tokenizer folder")
        return Tokenizer.from_file(str(file))
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def _check_extends(base, new, first_new: int) -> None:
    """The new tokenizer must keep every base token at its id (as `moai tokenizer extend` does)."""
    base_vocab = base.get_vocab(with_added_tokens=True)
    new_vocab = new.get_vocab(with_added_tokens=True)
    for token, token_id in base_vocab.items():
        if new_vocab.get(token) != token_id:
            raise MoaiInputError(
                f"the new tokenizer is not an extension of the base model's: base token {token!r} has id "
                f"{token_id} but {new_vocab.get(token)} in the new one",
                hint="extend the base tokenizer with `moai tokenizer extend` so old ids keep their meaning")
    if new.get_vocab_size(with_added_tokens=True) < first_new:
        raise MoaiInputError("the new tokenizer is smaller than the base model's")


def new_token_pieces(base, new, first_new: int, last_new: int) -> dict[int, list[int]]:
    """For each new id in [first_new, last_new): the base-tokenizer ids its text splits into.

    The new token's text (its decoded string) is encoded by the base tokenizer. A token whose
    bytes are not whole characters (byte-level BPE can end mid-character) is split by the base
    BPE model directly on its byte-level spelling, which needs no decoding.
    """
    out: dict[int, list[int]] = {}
    for token_id in range(first_new, last_new):
        text = new.decode([token_id], skip_special_tokens=False)
        pieces: list[int] = []
        if text and "\ufffd" not in text:
            pieces = base.encode(text, add_special_tokens=False).ids
        if not pieces:
            spelling = new.id_to_token(token_id) or ""
            try:
                pieces = [t.id for t in base.model.tokenize(spelling)] if spelling else []
            except Exception:  # a token the base model cannot spell: it keeps the mean below
                pieces = []
        pieces = [p for p in pieces if p < first_new]
        out[token_id] = pieces or list(range(first_new))  # nothing to go on: the mean of all rows
    return out


def _grown_embedding(embed, size: int):
    import torch

    old = embed.weight
    new = torch.nn.Embedding(size, old.shape[1], padding_idx=embed.padding_idx, device=old.device, dtype=old.dtype)
    new.weight[: old.shape[0]] = old
    new.weight[old.shape[0]:] = old.float().mean(dim=0).to(old.dtype)
    new.weight.requires_grad_(old.requires_grad)
    return new


def _grown_linear(head, size: int):
    import torch

    old = head.weight
    new = torch.nn.Linear(old.shape[1], size, bias=head.bias is not None, device=old.device, dtype=old.dtype)
    new.weight[: old.shape[0]] = old
    new.weight[old.shape[0]:] = old.float().mean(dim=0).to(old.dtype)
    if head.bias is not None:
        new.bias[: old.shape[0]] = head.bias
        new.bias[old.shape[0]:] = head.bias.float().mean().to(head.bias.dtype)
    new.weight.requires_grad_(old.requires_grad)
    return new
