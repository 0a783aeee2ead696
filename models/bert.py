"""``bert``: a small BERT-style encoder (post-LN, the layout of Hugging Face's classic
``BertModel`` with eager attention).

embeddings: word (vocab 1000) + position (buffer ``position_ids[:, :S]``, max 64) + token type
(buffer of zeros ``token_type_ids[:, :S]`` expanded to [B, S]) -> LayerNorm;
2 layers, each:
  Q, K, V: separate Linear(64, 64) with bias; ``view(B, S, H, D)`` with H = 4 and D = 16
  literal (``x.size()[:-1] + (H, D)``) then ``permute(0, 2, 1, 3)``;
  scores = Q @ K^T / sqrt(D) + extended mask, where the mask is built once from
  ``attention_mask`` [B, S] int64: ``(1 - mask[:, None, None, :].float()) * -10000``;
  softmax; @ V; ``permute(0, 2, 1, 3).contiguous().view(B, S, H * D)`` (literal 64);
  output Linear(64, 64) -> + residual -> LayerNorm;
  FFN Linear(64, 256) -> GELU (erf) -> Linear(256, 64) -> + residual -> LayerNorm.
Inputs ``input_ids``, ``attention_mask`` int64 [batch, seq]; output ``last_hidden_state``
[batch, seq, 64]. Dims 0 and 1 are symbolic ("batch", "seq", seq <= 64).
"""

from __future__ import annotations

VOCAB = 1000
HIDDEN = 64
HEADS = 4
FFN = 256
LAYERS = 2
MAX_POS = 64
SEQ = 16
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("last_hidden_state",)


def make(vocab: int = VOCAB, hidden: int = HIDDEN, heads: int = HEADS, ffn: int = FFN,
         layers: int = LAYERS, max_pos: int = MAX_POS):
    import math

    import torch
    from torch import nn

    from ._text import init_transformer

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.head_size = heads, hidden // heads
            self.all_head_size = heads * self.head_size
            self.query = nn.Linear(hidden, self.all_head_size)
            self.key = nn.Linear(hidden, self.all_head_size)
            self.value = nn.Linear(hidden, self.all_head_size)

        def split_heads(self, x):
            x = x.view(x.size()[:-1] + (self.num_heads, self.head_size))
            return x.permute(0, 2, 1, 3)

        def forward(self, x, mask):
            q = self.split_heads(self.query(x))
            k = self.split_heads(self.key(x))
            v = self.split_heads(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
            probs = torch.softmax(scores + mask, dim=-1)
            ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            return ctx.view(ctx.size()[:-2] + (self.all_head_size,))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = SelfAttention()
            self.attention_output = nn.Linear(hidden, hidden)
            self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.intermediate = nn.Linear(hidden, ffn)
            self.act = nn.GELU()
            self.output = nn.Linear(ffn, hidden)
            self.output_norm = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x, mask):
            x = self.attention_norm(self.attention_output(self.attention(x, mask)) + x)
            return self.output_norm(self.output(self.act(self.intermediate(x))) + x)

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
            self.position_embeddings = nn.Embedding(max_pos, hidden)
            self.token_type_embeddings = nn.Embedding(2, hidden)
            self.embedding_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(max_pos).unsqueeze(0),
                                 persistent=False)
            self.register_buffer("token_type_ids", torch.zeros(1, max_pos, dtype=torch.long),
                                 persistent=False)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids, attention_mask):
            batch, seq = input_ids.shape
            position_ids = self.position_ids[:, :seq]
            token_type_ids = self.token_type_ids[:, :seq].expand(batch, seq)
            x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
                 + self.position_embeddings(position_ids))
            x = self.embedding_norm(x)
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, mask)
            return x

    model = Bert()
    init_transformer(model)
    return model
