"""Hand-built graphs with ONNX Runtime's contrib ops, written the way its fusions and onnxruntime-genai's
model builder write them, and the zero-oracle for graphs whose KV-cache inputs and outputs change shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from graphs import GraphBuilder
from onnx import TensorProto, helper
from oracle import choose_channels, max_relative_error, run, zero_channels

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model
from onnxprune.io.wellformed import checkable

MS = "com.microsoft"


def contrib_builder(opset: int = 17) -> GraphBuilder:
    g = GraphBuilder(opset=opset)
    g.domains[MS] = 1
    return g


def rotary_caches(g: GraphBuilder, head: int, rotary: int | None = None) -> tuple[str, str]:
    """cos/sin caches [max positions, rotary dim / 2] as GroupQueryAttention and RotaryEmbedding read them."""
    half = (rotary or head) // 2
    angles = np.arange(64)[:, None] * (10000.0 ** (-np.arange(half) / half))[None]
    return g.const(np.cos(angles).astype(np.float32), "cos_cache"), g.const(np.sin(angles).astype(np.float32),
                                                                            "sin_cache")


def sequence_lengths(g: GraphBuilder, mask: str) -> tuple[str, str]:
    """seqlens_k (tokens - 1 per row, int32) and total_sequence_length from attention_mask, as genai does."""
    lens = g.op("ReduceSum", [mask, g.ints([1])], keepdims=0)
    lens = g.op("Cast", [g.op("Sub", [lens, g.ints(1)])], to=TensorProto.INT32)
    total = g.op("Cast", [g.op("Gather", [g.op("Shape", [mask]), g.ints(1)], axis=0)], to=TensorProto.INT32)
    return lens, total


def ffn(g: GraphBuilder, x: str, hidden: int, width: int, layer: int) -> str:
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    gate = g.op("MatMul", [x, g.weight((hidden, width), f"gate{layer}")], name=f"gate_proj{layer}")
    up = g.op("MatMul", [x, g.weight((hidden, width), f"up{layer}")], name=f"up_proj{layer}")
    act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
    return g.op("MatMul", [act, g.weight((width, hidden), f"down{layer}")], name=f"down_proj{layer}")


def genai_decoder(heads: int = 4, kv_heads: int = 2, head: int = 16, hidden: int = 32, width: int = 48,
                  layers: int = 2, vocab: int = 40, packed: bool = True, qk_norm: bool = False) -> onnx.ModelProto:
    """onnxruntime-genai's decoder: SimplifiedLayerNormalization, then per layer a (packed) QKV MatMul into
    GroupQueryAttention with rotary inside and the KV cache as graph inputs/outputs, o_proj, a
    SkipSimplifiedLayerNormalization closing each residual add, SwiGLU; lm_head."""
    g = contrib_builder()
    x = g.input([1, "seq", hidden], "inputs_embeds")
    mask = g.input([1, "total"], "attention_mask", elem_type=TensorProto.INT64)
    pasts = [tuple(g.input([1, kv_heads, "past", head], f"past_key_values.{i}.{kind}") for kind in ("key", "value"))
             for i in range(layers)]
    lens, total = sequence_lengths(g, mask)
    cos, sin = rotary_caches(g, head)
    normed = g.op("SimplifiedLayerNormalization", [x, g.weight((hidden,), "ln0", positive=True)], axis=-1,
                  epsilon=1e-5)
    residual, presents = x, []
    for i in range(layers):
        if packed:
            qkv = [g.op("MatMul", [normed, g.weight((hidden, (heads + 2 * kv_heads) * head), f"qkv{i}")],
                        name=f"qkv_proj{i}"), "", ""]
        else:
            qkv = [g.op("MatMul", [normed, g.weight((hidden, n * head), f"{p}{i}")], name=f"{p}_proj{i}")
                   for p, n in (("q", heads), ("k", kv_heads), ("v", kv_heads))]
        if qk_norm:
            qkv[0] = per_head_rms(g, qkv[0], heads, head, f"q_norm{i}")
            qkv[1] = per_head_rms(g, qkv[1], kv_heads, head, f"k_norm{i}")
        outputs = [f"attn{i}", f"present.{i}.key", f"present.{i}.value"]
        g.op("GroupQueryAttention", qkv + [*pasts[i], lens, total, cos, sin], outputs=outputs, name=f"gqa{i}",
             domain=MS, num_heads=heads, kv_num_heads=kv_heads, do_rotary=1)
        presents += outputs[1:]
        o = g.op("MatMul", [outputs[0], g.weight((heads * head, hidden), f"o{i}")], name=f"o_proj{i}")
        normed, _, _, residual = g.op("SkipSimplifiedLayerNormalization",
                                      [o, residual, g.weight((hidden,), f"post_ln{i}", positive=True)],
                                      outputs=4, name=f"post_ln{i}", domain=MS, epsilon=1e-5)
        down = ffn(g, normed, hidden, width, i)
        normed, _, _, residual = g.op("SkipSimplifiedLayerNormalization",
                                      [down, residual, g.weight((hidden,), f"ln{i + 1}", positive=True)],
                                      outputs=4, name=f"ln{i + 1}", domain=MS, epsilon=1e-5)
    g.op("MatMul", [normed, g.weight((hidden, vocab), "lm_head")], outputs=["logits"], name="lm_head")
    declare_output(g, "logits", [1, "seq", vocab])
    for name in presents:
        declare_output(g, name, [1, kv_heads, "total", head])
    return g.model()


def declare_output(g: GraphBuilder, name: str, shape: list) -> None:
    g.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))


def per_head_rms(g: GraphBuilder, x: str, heads: int, head: int, name: str) -> str:
    """onnxruntime-genai's QK-norm: [B, S, H*D] -> [B, S*H, D] -> RMSNorm over D -> [B, S, H*D]."""
    merged = g.op("Reshape", [x, g.ints([0, -1, head])], name=f"{name}_merge")
    normed = g.op("SimplifiedLayerNormalization", [merged, g.weight((head,), f"{name}_w", positive=True)],
                  name=name, axis=-1, epsilon=1e-6)
    return g.op("Reshape", [normed, g.ints([0, -1, heads * head])], name=f"{name}_split")


def decoder_feed(model: onnx.ModelProto, seq: int = 3, past: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Hidden states, an all-ones mask over past + new tokens, random past keys and values."""
    rng = np.random.default_rng(seed)
    feed = {}
    for value in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else {"seq": seq, "past": past, "total": past + seq}.get(
            d.dim_param, 1) for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == TensorProto.INT64:
            feed[value.name] = np.ones(dims, np.int64)
        else:
            feed[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feed


def check_valid(path: Path) -> None:
    """onnx's full check; ops only ONNX Runtime defines in the default domain are left to ORT, which runs them."""
    onnx.checker.check_model(checkable(onnx.load(str(path))), full_check=True)


def graph_io_removal(model: Model, plan: dict[int, np.ndarray]) -> dict[tuple[str, int], np.ndarray]:
    """What the plan removes from graph inputs and outputs (KV caches), by (name, axis)."""
    boundary = set(model.input_names) | set(model.output_names)
    removal = build_channel_graph(model).removal({k: list(v) for k, v in plan.items()})
    return {key: indices for key, indices in removal.items() if key[0] in boundary}


def oracle(proto: onnx.ModelProto, tmp_path: Path, feed: dict[str, np.ndarray], ratio: float = 0.5,
           seeds=(0, 1), tolerance: float = 1e-5) -> list[tuple[dict, dict, Path]]:
    """The zero-oracle with a KV cache: zero the planned channels in the original, prune them, and the
    pruned model, fed the kept heads of each cache input, must give the original's outputs (their kept
    heads, for cache outputs). Channels and heads both follow `ratio`."""
    results = []
    for seed in seeds:
        model = Model.from_proto(proto)
        plan = choose_channels(model, ratio, seed)
        assert plan, "nothing was prunable"
        io_removal = graph_io_removal(model, plan)
        zero_channels(model, plan)
        zeroed, out = tmp_path / f"zeroed{seed}.onnx", tmp_path / f"pruned{seed}.onnx"
        save_model(model, zeroed)
        report = prune(zeroed, out, PruneOptions(structured=ratio, heads=ratio, validate=False, round_to=1))
        removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
        assert removed == {k: [int(i) for i in v] for k, v in plan.items()}, "plan not followed"
        check_valid(out)
        reference = run(zeroed, feed)
        pruned_feed = dict(feed)
        for (name, axis), indices in io_removal.items():
            if name in pruned_feed:
                pruned_feed[name] = np.delete(pruned_feed[name], indices, axis=axis)
            if name in reference:
                reference[name] = np.delete(reference[name], indices, axis=axis)
        error = max_relative_error(reference, run(out, pruned_feed))
        assert error < tolerance, f"seed {seed}: relative error {error}"
        results.append((plan, report, out))
    return results


def _past_inputs(g: GraphBuilder, names: list[str], shape: list) -> list[str]:
    return [g.input(shape, name) for name in names]


def mha_block(heads: int = 4, head: int = 16, hidden: int = 32, rotary: bool = True,
              partial_rotary: bool = False) -> onnx.ModelProto:
    """q/k/v MatMuls without bias, RotaryEmbedding on q and k (3D: head size from the cos cache, or with
    partial rotation from num_heads), MultiHeadAttention with the projection bias, past_key_N/present_key_N
    caches, o_proj, SkipLayerNorm."""
    g = contrib_builder()
    x = g.input([1, "seq", hidden], "x")
    positions = g.input([1, "seq"], "position_ids", elem_type=TensorProto.INT64)
    past = _past_inputs(g, ["past_key_0", "past_value_0"], [1, heads, "past", head])
    q, k, v = (g.op("MatMul", [x, g.weight((hidden, heads * head), f"{p}_W")], name=f"{p}_proj") for p in "qkv")
    if rotary:
        cos, sin = rotary_caches(g, head, head // 2 if partial_rotary else None)
        attrs = {"num_heads": heads, "rotary_embedding_dim": head // 2} if partial_rotary else {}
        q, k = (g.op("RotaryEmbedding", [t, positions, cos, sin], name=f"rotary_{p}", domain=MS, **attrs)
                for t, p in ((q, "q"), (k, "k")))
    bias = g.weight((3 * heads * head,), "qkv_bias")
    g.op("MultiHeadAttention", [q, k, v, bias, "", "", *past], outputs=["attn", "present_key_0", "present_value_0"],
         name="mha", domain=MS, num_heads=heads, unidirectional=1)
    o = g.op("MatMul", ["attn", g.weight((heads * head, hidden), "o_W")], name="o_proj")
    norm_weights = [g.weight((hidden,), "ln_gamma", positive=True), g.weight((hidden,), "ln_beta"),
                    g.weight((hidden,), "ln_bias")]
    g.op("SkipLayerNormalization", [o, x, *norm_weights], outputs=["y"], name="skip_ln", domain=MS, epsilon=1e-5)
    declare_output(g, "y", [1, "seq", hidden])
    for name in ("present_key_0", "present_value_0"):
        declare_output(g, name, [1, heads, "total", head])
    return g.model()


def attention_block(heads: int = 4, hidden: int = 32, sizes: tuple[int, int, int] | None = (64, 64, 64),
                    width: int = 48, past: bool = True) -> onnx.ModelProto:
    """BERT/GPT-2 as ORT's fusion writes them: Attention (one [hidden, q+k+v] weight, past/present packed as
    [2, B, H, T, D]), SkipLayerNormalization, an FFN with BiasGelu and FastGelu."""
    g = contrib_builder()
    x = g.input([1, "seq", hidden], "x")
    q_size, k_size, v_size = sizes or (hidden,) * 3
    cache = [g.input([2, 1, heads, "past", k_size // heads], "past_0")] if past else []
    attrs = {"qkv_hidden_sizes": list(sizes)} if sizes else {}
    projection = [g.weight((hidden, q_size + k_size + v_size), "qkv_W"), g.weight((q_size + k_size + v_size,), "qkv_B")]
    g.op("Attention", [x, *projection, "", *cache], outputs=["attn"] + (["present_0"] if past else []),
         name="attention", domain=MS, num_heads=heads, unidirectional=1, **attrs)
    o = g.op("MatMul", ["attn", g.weight((v_size, hidden), "o_W")], name="o_proj")
    normed = g.op("SkipLayerNormalization", [o, x, g.weight((hidden,), "ln1_gamma", positive=True),
                                             g.weight((hidden,), "ln1_beta")], name="ln1", domain=MS, epsilon=1e-5)
    up = g.op("MatMul", [normed, g.weight((hidden, width), "up_W")], name="up_proj")
    act = g.op("BiasGelu", [up, g.weight((width,), "up_B")], name="bias_gelu", domain=MS)
    mid = g.op("MatMul", [act, g.weight((width, width), "mid_W")], name="mid_proj")
    act = g.op("FastGelu", [mid, g.weight((width,), "mid_B")], name="fast_gelu", domain=MS)
    act = g.op("QuickGelu", [g.op("Gelu", [act], name="gelu", domain=MS)], name="quick_gelu", domain=MS, alpha=1.702)
    down = g.op("MatMul", [act, g.weight((width, hidden), "down_W")], name="down_proj")
    g.op("SkipLayerNormalization", [down, normed, g.weight((hidden,), "ln2_gamma", positive=True),
                                    g.weight((hidden,), "ln2_beta")], outputs=["y"], name="ln2", domain=MS,
         epsilon=1e-5)
    declare_output(g, "y", [1, "seq", hidden])
    if past:
        declare_output(g, "present_0", [2, 1, heads, "total", k_size // heads])
    return g.model()


def nbits_weight(g: GraphBuilder, name: str, k: int, n: int, block: int, bits: int = 4, packed_zeros: bool = True,
                 flat_scales: bool = False) -> list[str]:
    """B, scales and zero points of a MatMulNBits weight, random but valid (zero points packed like B)."""
    blocks = -(-k // block)
    b = g.const(g.rng.integers(0, 256, (n, blocks, block * bits // 8), dtype=np.uint8), f"{name}_B")
    scales = g.rng.uniform(0.01, 0.05, (n, blocks)).astype(np.float32)
    scales = g.const(scales.reshape(-1) if flat_scales else scales, f"{name}_scales")
    if packed_zeros:
        zeros = g.const(g.rng.integers(0, 256, (n, -(-blocks * bits // 8)), dtype=np.uint8), f"{name}_zeros")
    else:
        zeros = g.const(g.rng.uniform(6, 10, (n, blocks)).astype(np.float32), f"{name}_zeros")
    return [b, scales, zeros]


def nbits_ffn(hidden: int = 64, width: int = 128, block: int = 16, packed_zeros: bool = True,
              flat_scales: bool = False, embedding: bool = False) -> onnx.ModelProto:
    """An int4 FFN as ORT's MatMulNBits quantizer writes it: up (N = width, with bias), FastGelu, down (K = width).
    With `embedding`, its input comes from an int4 table, as onnxruntime-genai's int4 models start:
    GatherBlockQuantized of token ids."""
    g = contrib_builder()
    if embedding:
        table = g.const(g.rng.integers(0, 256, (32, hidden // 2), dtype=np.uint8), "embed_table")
        scales = g.const(g.rng.uniform(0.01, 0.05, (32, hidden // block)).astype(np.float32), "embed_scales")
        ids = g.input([1, "seq"], "input_ids", elem_type=TensorProto.INT64)
        x = g.op("GatherBlockQuantized", [table, ids, scales], name="embed", domain=MS, gather_axis=0,
                 quantize_axis=1, block_size=block, bits=4)
    else:
        x = g.input([1, "seq", hidden], "x")
    attrs = {"bits": 4, "block_size": block}
    up = g.op("MatMulNBits", [x, *nbits_weight(g, "up", hidden, width, block, packed_zeros=packed_zeros), "",
                              g.weight((width,), "up_bias")], name="up_proj", domain=MS, K=hidden, N=width, **attrs)
    act = g.op("FastGelu", [up], name="fast_gelu", domain=MS)
    down = nbits_weight(g, "down", width, hidden, block, packed_zeros=packed_zeros, flat_scales=flat_scales)
    g.op("MatMulNBits", [act, *down], outputs=["y"], name="down_proj", domain=MS, K=width, N=hidden, **attrs)
    declare_output(g, "y", [1, "seq", hidden])
    return g.model()


def onnx_attention_block(heads: int = 4, kv_heads: int = 2, head: int = 16, hidden: int = 32,
                         rotary: bool = False) -> onnx.ModelProto:
    """ONNX's own Attention (opset 23) on 3D q/k/v with q_num_heads and kv_num_heads, and a KV cache;
    with `rotary`, ONNX's RotaryEmbedding (3D, num_heads given) on q and k first."""
    g = GraphBuilder(opset=23)
    x = g.input([1, "seq", hidden], "x")
    past = _past_inputs(g, ["past_key_values.0.key", "past_key_values.0.value"], [1, kv_heads, "past", head])
    q, k, v = (g.op("MatMul", [x, g.weight((hidden, n * head), f"{p}_W")], name=f"{p}_proj")
               for p, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)))
    if rotary:
        positions = g.input([1, "seq"], "position_ids", elem_type=TensorProto.INT64)
        cos, sin = rotary_caches(g, head)
        q, k = (g.op("RotaryEmbedding", [t, cos, sin, positions], name=f"rotary_{p}", num_heads=n)
                for t, p, n in ((q, "q", heads), (k, "k", kv_heads)))
    g.op("Attention", [q, k, v, "", *past], outputs=["attn", "present.0.key", "present.0.value"], name="attention",
         q_num_heads=heads, kv_num_heads=kv_heads, is_causal=1)
    g.op("MatMul", ["attn", g.weight((heads * head, hidden), "o_W")], outputs=["y"], name="o_proj")
    declare_output(g, "y", [1, "seq", hidden])
    for name in ("present.0.key", "present.0.value"):
        declare_output(g, name, [1, kv_heads, "total", head])
    return g.model(infer=False)


def plain_cache_decoder(heads: int = 4, kv_heads: int = 2, head: int = 8, hidden: int = 16) -> onnx.ModelProto:
    """Attention of plain ops with the KV cache as graph inputs/outputs, as Optimum's export writes it:
    heads split by Reshape + Transpose, Concat(past, new) on the sequence axis is the present output,
    repeat_kv by Unsqueeze + Expand + Reshape, o_proj."""
    g = GraphBuilder()
    x = g.input([1, "seq", hidden], "x")
    past = _past_inputs(g, ["past_key_values.0.key", "past_key_values.0.value"], [1, kv_heads, "past", head])

    def split(t: str, n: int) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, g.ints([0, 0, n, head])])], perm=[0, 2, 1, 3])

    q = split(g.op("MatMul", [x, g.weight((hidden, heads * head), "q_W")], name="q_proj"), heads)
    cached = []
    for name, cache, present in (("k", past[0], "present.0.key"), ("v", past[1], "present.0.value")):
        new = split(g.op("MatMul", [x, g.weight((hidden, kv_heads * head), f"{name}_W")], name=f"{name}_proj"),
                    kv_heads)
        g.op("Concat", [cache, new], outputs=[present], axis=2)
        repeated = g.op("Expand", [g.op("Unsqueeze", [present, g.ints([2])]), g.ints([1, 1, heads // kv_heads, 1, 1])])
        cached.append(g.op("Reshape", [repeated, g.ints([0, heads, -1, head])]))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [cached[0]], perm=[0, 1, 3, 2])]),
                          g.scalar(head ** -0.5)])
    attended = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), cached[1]])
    merged = g.op("Reshape", [g.op("Transpose", [attended], perm=[0, 2, 1, 3]), g.ints([0, 0, heads * head])])
    g.op("MatMul", [merged, g.weight((heads * head, hidden), "o_W")], outputs=["y"], name="o_proj")
    declare_output(g, "y", [1, "seq", hidden])
    for name in ("present.0.key", "present.0.value"):
        declare_output(g, name, [1, kv_heads, "total", head])
    return g.model()


def cross_attention_block(heads: int = 4, head: int = 16, hidden: int = 32) -> onnx.ModelProto:
    """MultiHeadAttention with key and value already split into heads [B, H, L, D] (an encoder's
    states, as cross attention reads them) and a query from this stream."""
    g = contrib_builder()
    x, memory = g.input([1, "seq", hidden], "x"), g.input([1, "mem", hidden], "memory")
    q = g.op("MatMul", [x, g.weight((hidden, heads * head), "q_W")], name="q_proj")
    k, v = (g.op("Transpose", [g.op("Reshape", [g.op("MatMul", [memory, g.weight((hidden, heads * head), f"{p}_W")],
                                                      name=f"{p}_proj"), g.ints([0, 0, heads, head])])],
                 perm=[0, 2, 1, 3]) for p in "kv")
    g.op("MultiHeadAttention", [q, k, v], outputs=["attn"], name="mha", domain=MS, num_heads=heads)
    g.op("MatMul", ["attn", g.weight((heads * head, hidden), "o_W")], outputs=["y"], name="o_proj")
    declare_output(g, "y", [1, "seq", hidden])
    return g.model()
