"""Models follow their tokenizer: grow a model's embedding (and untied output) rows to a bigger
vocabulary, new rows initialised to the mean of the old ones.

Mean initialisation keeps the new tokens' logits near the average of the existing ones, so the
loss does not jump when an extended tokenizer's new ids first appear (random rows would make
them either never or always predicted). A tied lm_head stays tied to the grown embedding.

    >>> import tempfile, pathlib
    >>> from moai_llm.config import MoaiConfig
    >>> from moai_llm.modeling import MoaiForCausalLM
    >>> from moai_llm.tokenizer import load_tokenizer, train_tokenizer
    >>> from moai_llm.tokenizer.model_vocab import grow_embeddings
    >>> model = MoaiForCausalLM(MoaiConfig.from_preset("tiny", vocab_size=256))
    >>> path = train_tokenizer(["hello world"] * 20, pathlib.Path(tempfile.mkdtemp()) / "tok", vocab_size=300)
    >>> tokenizer = load_tokenizer(path)
    >>> grew = grow_embeddings(model, len(tokenizer))   # True if rows were added
    >>> grew, model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.vocab_size
    (True, True)
"""

from __future__ import annotations

from moai_llm.progress import info


def grow_embeddings(model, new_vocab_size: int) -> bool:
    """Grow `model`'s input embeddings (and untied lm_head) to `new_vocab_size` rows, new rows =
    mean of the old rows; update `config.vocab_size`; print a message. Returns whether it grew
    (False when the model already has that many rows or more: rows are never removed)."""
    import torch

    embed = model.get_input_embeddings()
    old_size, dim = embed.weight.shape
    if new_vocab_size <= old_size:
        return False
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    with torch.no_grad():
        new_embed = _grown_embedding(embed, new_vocab_size)
        model.set_input_embeddings(new_embed)
        if head is not None:
            if tied:
                head.weight = new_embed.weight
            else:
                model.set_output_embeddings(_grown_linear(head, new_vocab_size))
            if getattr(head, "out_features", None) is not None:
                model.get_output_embeddings().out_features = new_vocab_size
    model.config.vocab_size = new_vocab_size
    info(f"model vocabulary grown {old_size} → {new_vocab_size} rows (new rows = mean of the old ones"
         f"{', lm_head tied' if tied else ', lm_head grown too' if head is not None else ''})")
    return True


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
