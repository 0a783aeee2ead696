"""``gpt2``: a small GPT-2-style decoder (the layout of Hugging Face's ``GPT2LMHeadModel``,
with ``nn.Linear`` in place of its ``Conv1D``).

token embedding wte (vocab 512, hidden 64) + learned positions wpe(``arange(S)``, max 64) ->
2 pre-LN blocks, each:
  ln_1 LayerNorm; ``c_attn`` ONE fused Linear(64, 192) -> ``.split(64, dim=2)`` into q, k, v;
  heads ``view(x.size()[:-1] + (4, 16))`` (H literal) -> ``permute(0, 2, 1, 3)``;
  scores = Q @ K^T / sqrt(16); causal mask from a bool buffer ``bias`` [1, 1, 64, 64]
  (tril), sliced ``[:, :, :S, :S]``, applied with ``torch.where(mask, scores, finfo.min)``;
  softmax; @ V; ``permute(0, 2, 1, 3).contiguous().view(B, S, 64)``; ``c_proj`` Linear;
  + residual; ln_2; MLP c_fc Linear(64, 256) -> GELU (tanh approximation, "gelu_new") ->
  c_proj Linear(256, 64); + residual;
ln_f LayerNorm -> lm_head Linear(64, 512, bias=False) whose weight IS wte.weight (tied, as in
GPT-2: the exported graph reads one initializer twice, Gather for the embedding and MatMul
through a transpose for the logits).
Input ``input_ids`` int64 [batch, seq]; output ``logits`` [batch, seq, 512]; dims 0 and 1
symbolic ("batch", "seq", seq <= 64).
"""

from __future__ import annotations

VOCAB = 512
HIDDEN = 64
HEADS = 4
MLP = 256
LAYERS = 2
MAX_POS = 64
SEQ = 16
INPUT_NAMES = ("input_ids",)
OUTPUT_NAMES = ("logits",)


def make(vocab: int = VOCAB, hidden: int = HIDDEN, heads: int = HEADS, mlp: int = MLP,
         layers: int = LAYERS, max_pos: int = MAX_POS):
    import math

    import torch
    from torch import nn

    from ._text import init_transformer

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.head_dim, self.split_size = heads, hidden // heads, hidden
            self.c_attn = nn.Linear(hidden, 3 * hidden)
            self.c_proj = nn.Linear(hidden, hidden)
            mask = torch.tril(torch.ones(max_pos, max_pos, dtype=torch.bool))
            self.register_buffer("bias", mask.view(1, 1, max_pos, max_pos), persistent=False)

        def split_heads(self, x):
            x = x.view(x.size()[:-1] + (self.num_heads, self.head_dim))
            return x.permute(0, 2, 1, 3)

        def forward(self, x):
            q, k, v = self.c_attn(x).split(self.split_size, dim=2)
            q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            seq = q.size(-2)
            causal = self.bias[:, :, :seq, :seq]
            scores = torch.where(causal, scores,
                                 torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype))
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            out = out.view(out.size()[:-2] + (self.num_heads * self.head_dim,))
            return self.c_proj(out)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(hidden)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(hidden)
            self.c_fc = nn.Linear(hidden, mlp)
            self.act = nn.GELU(approximate="tanh")
            self.mlp_proj = nn.Linear(mlp, hidden)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp_proj(self.act(self.c_fc(self.ln_2(x))))

    class GPT2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, hidden)
            self.wpe = nn.Embedding(max_pos, hidden)
            self.h = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(hidden)
            self.lm_head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, input_ids):
            seq = input_ids.size(-1)
            position_ids = torch.arange(0, seq, dtype=torch.long,
                                        device=input_ids.device).unsqueeze(0)
            x = self.wte(input_ids) + self.wpe(position_ids)
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    model = GPT2()
    init_transformer(model)
    with torch.no_grad():  # embeddings scaled so the tied lm_head gives logits of std ~2
        model.wte.weight.normal_(0.0, 0.25)
        model.wpe.weight.normal_(0.0, 0.25)
    model.lm_head.weight = model.wte.weight
    return model
