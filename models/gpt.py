"""``gpt``: a small Llama-style decoder (the layout of Hugging Face's ``LlamaForCausalLM`` with
eager attention), also the architecture of ``tinylm``.

token embedding (vocab 512, hidden 64, no positions: RoPE) ->
2 pre-norm layers, each:
  RMSNorm (by hand: ``x * rsqrt(mean(x^2, -1) + eps) * weight``);
  grouped-query attention, 4 query heads, 2 KV heads, head_dim 16: q/k/v Linear without
  bias; ``view(B, S, -1, D)`` (the head count is -1, as in HF) then ``transpose(1, 2)``;
  rotary embeddings on q and k: ``x * cos + rotate_half(x) * sin`` with
  ``rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])`` and cos/sin sliced ``[:S]`` from
  non-persistent buffers [max_pos, D] (``cat(freqs, freqs)``), unsqueezed to [1, 1, S, D];
  K and V repeated to the query heads with ``repeat_kv``
  (``x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D)``);
  scores = Q @ K^T * D^-0.5 + causal mask (built once per forward:
  ``full((S, S), finfo.min).triu(1)``, added as [S, S]); softmax; @ V;
  ``transpose(1, 2).reshape(B, S, -1)``; o_proj Linear; + residual;
  RMSNorm; SwiGLU MLP ``down(silu(gate(x)) * up(x))`` (intermediate 192); + residual;
final RMSNorm -> lm_head Linear(64, 512) (not tied).
Input ``input_ids`` int64 [batch, seq]; output ``logits`` [batch, seq, 512]; dims 0 and 1
symbolic ("batch", "seq", seq <= max_pos = 128). Attention is written by hand (no
``F.scaled_dot_product_attention``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

INPUT_NAMES = ("input_ids",)
OUTPUT_NAMES = ("logits",)
SEQ = 16


@dataclass(frozen=True)
class Config:
    vocab: int = 512
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    intermediate: int = 192
    max_pos: int = 128
    rope_base: float = 10000.0
    eps: float = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, n_rep: int):
    batch, kv_heads, seq, head_dim = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, None, :, :].expand(batch, kv_heads, n_rep, seq, head_dim)
    return x.reshape(batch, kv_heads * n_rep, seq, head_dim)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.head_dim, self.n_rep = cfg.head_dim, cfg.heads // cfg.kv_heads
        self.scaling = cfg.head_dim ** -0.5
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        input_shape = x.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(x).view(hidden_shape).transpose(1, 2)
        k = self.k_proj(x).view(hidden_shape).transpose(1, 2)
        v = self.v_proj(x).view(hidden_shape).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling + mask
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).contiguous()
        return self.o_proj(out.reshape(*input_shape, -1))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        freqs = torch.outer(torch.arange(cfg.max_pos).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, input_ids):
        seq = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        cos = self.cos_cached[:seq][None, None]
        sin = self.sin_cached[:seq][None, None]
        mask = torch.full((seq, seq), torch.finfo(x.dtype).min, dtype=x.dtype,
                          device=x.device).triu(1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def make(cfg: Config = Config()):
    from ._text import init_transformer

    model = GPT(cfg)
    init_transformer(model)
    return model
