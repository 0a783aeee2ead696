"""Helpers shared by the transformer models: seeded int64 token inputs (numpy only) and the
deterministic init / finalization of randomly initialized transformers (torch imported lazily).

Token inputs (:func:`token_inputs`), by ``style``:

- ``"bert"``: ``input_ids`` uniform in ``[low, vocab)``, first token ``cls``, last valid token
  ``sep``, padded positions ``pad`` (0); ``attention_mask`` 1 on valid tokens, 0 on padding.
  Row ``b`` keeps ``seq - pad_len(b)`` tokens with ``pad_len(b) = (3 + 5 b) % (seq // 2)``:
  row 0 of every batch has 3 padded positions (for seq >= 8), the others vary, none is empty.
- ``"lm"``: ``input_ids`` uniform in ``[0, vocab)``, no mask.
- ``"bytes"``: windows of the held-out text of ``tinylm`` (UTF-8 bytes, vocab 256), one per row,
  at seeded offsets: real text, so pruned language models are validated on what they model.
"""

from __future__ import annotations

import numpy as np


def pad_lengths(batch: int, seq: int) -> list[int]:
    """Number of padded positions of each row (see the module docstring)."""
    return [(3 + 5 * b) % max(seq // 2, 1) for b in range(batch)]


def token_inputs(shape: tuple[int, int], vocab: int, style: str, seed: int = 0,
                 names: tuple[str, ...] = ("input_ids",)) -> dict[str, np.ndarray]:
    batch, seq = shape
    rng = np.random.default_rng(seed)
    if style == "bytes":
        from .tinylm import dataset

        text = dataset("heldout")
        starts = rng.integers(0, len(text) - seq, batch)
        ids = np.stack([text[s:s + seq] for s in starts]).astype(np.int64)
        return {names[0]: ids}
    if style == "lm":
        return {names[0]: rng.integers(0, vocab, (batch, seq), dtype=np.int64)}
    if style == "bert":
        low, cls, sep, pad = BERT_SPECIALS[vocab] if vocab in BERT_SPECIALS else (5, 1, 2, 0)
        ids = rng.integers(low, vocab, (batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), dtype=np.int64)
        for b, n_pad in enumerate(pad_lengths(batch, seq)):
            valid = seq - n_pad
            ids[b, 0], ids[b, valid - 1] = cls, sep
            ids[b, valid:], mask[b, valid:] = pad, 0
        feeds = {names[0]: ids}
        if len(names) > 1:
            feeds[names[1]] = mask
        return feeds
    raise ValueError(f"unknown token style {style!r}")


# vocab size -> (first ordinary id, [CLS], [SEP], [PAD]); 30522: bert-base-uncased (MiniLM)
BERT_SPECIALS = {30522: (1996, 101, 102, 0)}


def init_transformer(module, *, gain: float = 1.0) -> None:
    """Deterministic init (under the caller's seed) giving O(1), input-dependent activations
    and non-uniform attention: Linear weights N(0, gain / fan_in) (variance preserving, so
    q.k / sqrt(d) scores have std ~1), biases N(0, 0.1); embeddings N(0, 1); LayerNorm /
    RMSNorm weights U(0.8, 1.2), LayerNorm biases N(0, 0.1)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, (gain / m.in_features) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 1.0)
            elif isinstance(m, nn.LayerNorm) or type(m).__name__ == "RMSNorm":
                m.weight.uniform_(0.8, 1.2)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0.0, 0.1)


def finalize(module):
    """Eval mode, parameters frozen (the text models have no BatchNorm to calibrate)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
