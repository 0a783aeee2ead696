"""``tinylm``: a tiny byte-level language model, the ``gpt`` (Llama-style) architecture trained
here for a few CPU minutes on the help text that ships with Python (``pydoc_data.topics``).
A pruning benchmark with a meaningful quality metric: held-out perplexity.

Architecture (``CONFIG``): vocab 256 (UTF-8 bytes, no tokenizer), hidden 128, 4 layers,
GQA 4 query / 2 KV heads of dim 32, SwiGLU intermediate 384, RoPE (max 256 positions),
RMSNorm, untied lm_head: 0.85 M parameters, ``tinylm.pt`` (float32 state_dict) 3.4 MB.

Data: ``"\\n\\n".join(topics[k] for k in sorted(topics))`` encoded as UTF-8 (Python 3.11.7:
466,273 bytes, sha256 in ``tinylm.json``); the first 90% is ``"train"``, the last 10%
``"heldout"`` (a fixed byte split; the topics are in key order, so held-out covers the last
topics alphabetically). The text depends on the Python version: ``dataset`` reads it from the
running interpreter, and ``tinylm.json`` records the digest it was trained on.

    >>> from models import tinylm
    >>> module = tinylm.load()                          # trained weights of ZOO/tinylm.pt
    >>> tinylm.perplexity_torch(module, "heldout")
    >>> path = models.build("tinylm", "torchscript", "tinylm.onnx")
    >>> tinylm.perplexity_onnx(path, "heldout")         # the same, through onnxruntime

Retrain (deterministic for a given step count and torch build; writes tinylm.pt/.json):

    python -c "from models import tinylm; tinylm.train('models/zoo', steps=...)"

``import models.tinylm`` imports numpy only (``dataset`` feeds ``models.example_inputs``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import sys
import time

import numpy as np

CONFIG = dict(vocab=256, hidden=128, layers=4, heads=4, kv_heads=2, head_dim=32,
              intermediate=384, max_pos=256)
SEED = 0
TRAIN_SEQ = 128  # context length used in training and (default) evaluation
HELDOUT_FRACTION = 0.1
ZOO = pathlib.Path(__file__).resolve().parent / "zoo"
WEIGHTS = ZOO / "tinylm.pt"
INPUT_NAMES = ("input_ids",)
OUTPUT_NAMES = ("logits",)


def text_bytes() -> bytes:
    """The training corpus: every pydoc help topic of the running Python, in key order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


@functools.cache
def _splits() -> dict[str, np.ndarray]:
    data = np.frombuffer(text_bytes(), dtype=np.uint8).astype(np.int64)
    cut = int(len(data) * (1 - HELDOUT_FRACTION))
    return {"train": data[:cut], "heldout": data[cut:]}


def dataset(split: str = "heldout") -> np.ndarray:
    """Token ids (bytes, int64) of ``split``: "train" (first 90%) or "heldout" (last 10%)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return _splits()[split].copy()


def data_description() -> dict:
    text = text_bytes()
    train = _splits()["train"]
    return {
        "source": "pydoc_data.topics.topics of the running Python, values joined by '\\n\\n' "
                  "in sorted key order, UTF-8 bytes (vocab 256)",
        "python": sys.version.split()[0],
        "bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
        "train": f"bytes [0, {len(train)})",
        "heldout": f"bytes [{len(train)}, {len(text)}) (last {HELDOUT_FRACTION:.0%})",
    }


def unigram_perplexity(split: str = "heldout") -> float:
    """Perplexity of the byte unigram distribution of the training split (add-one smoothed)."""
    counts = np.bincount(dataset("train"), minlength=256).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[dataset(split)].mean()))


def config():
    from .gpt import Config

    return Config(**CONFIG)


def make_untrained():
    """The architecture with the training init (N(0, 0.02), residual outputs scaled by
    1/sqrt(2 * layers), norms at 1), seeded by the caller."""
    import torch

    from .gpt import GPT

    cfg = config()
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                continue
            std = 0.02 / (2 * cfg.layers) ** 0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            p.normal_(0.0, std)
    return model


def load(path: str | pathlib.Path | None = None):
    """The trained model (``ZOO/tinylm.pt`` by default), eval mode."""
    import torch

    from .gpt import GPT

    path = pathlib.Path(path) if path else WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run models.tinylm.train({str(path.parent)!r})")
    model = GPT(config())
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _windows(split: str, seq: int):
    """Non-overlapping windows: inputs tokens[i*seq:(i+1)*seq], targets shifted by one."""
    tokens = dataset(split)
    n = (len(tokens) - 1) // seq
    return (tokens[:n * seq].reshape(n, seq), tokens[1:n * seq + 1].reshape(n, seq))


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


def perplexity_torch(module, split: str = "heldout", seq: int = TRAIN_SEQ,
                     batch: int = 16) -> float:
    """exp(mean next-byte NLL) of ``module`` over the non-overlapping ``seq``-windows of
    ``split`` (each window predicts its own 2nd..(seq+1)th bytes; no context across windows)."""
    import torch

    x, y = _windows(split, seq)
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = module(torch.from_numpy(x[i:i + batch])).numpy()
            total += _nll(logits, y[i:i + batch]).sum()
    return float(np.exp(total / y.size))


def perplexity_onnx(path, split: str = "heldout", seq: int = TRAIN_SEQ, batch: int = 16,
                    providers: list[str] | None = None) -> float:
    """``perplexity_torch`` through onnxruntime on an ONNX model taking ``input_ids`` [batch,
    seq] int64 and returning logits [batch, seq, 256] as its first output. A static batch or
    seq in the model overrides ``batch`` / ``seq`` (the last partial batch is padded with
    repeated windows whose loss is ignored)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if isinstance(inp.shape[1], int):
        seq = inp.shape[1]
    static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    batch = static_batch or batch
    x, y = _windows(split, seq)
    total = 0.0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        n = len(xb)
        if static_batch and n < static_batch:
            xb = np.concatenate([xb, np.repeat(xb[-1:], static_batch - n, 0)])
        logits = sess.run(None, {inp.name: xb})[0][:n]
        total += _nll(logits, yb).sum()
    return float(np.exp(total / y.size))


def train(out_dir: str | pathlib.Path = ZOO, minutes: float = 5.0, steps: int | None = None,
          batch: int = 32, seq: int = TRAIN_SEQ, lr: float = 3e-3, warmup: int = 50,
          weight_decay: float = 0.1, seed: int = SEED, threads: int | None = None,
          eval_every: int = 250, log=print) -> dict:
    """Train from scratch and write ``out_dir/tinylm.pt`` (state_dict) and ``tinylm.json``
    (config, data split, hyper-parameters, perplexities). Returns the json's dict.

    AdamW (betas 0.9/0.95, weight decay on matrices only), linear warm-up then cosine decay to
    10% of ``lr``, gradient clipping 1.0, random training windows of ``seq + 1`` bytes drawn
    with a generator seeded by ``seed``. ``steps`` fixes the schedule (deterministic for a
    given torch build and thread count); without it the step count is chosen from
    ``minutes`` by timing the first 5 steps (then recorded in the json: pass it as ``steps``
    to reproduce). Every ``eval_every`` steps the held-out perplexity is printed (no effect
    on training: evaluation draws no random numbers)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = make_untrained()
    model.train()
    train_tokens = torch.from_numpy(dataset("train"))
    gen = torch.Generator().manual_seed(seed + 1)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"tinylm: {n_params:,} parameters, {len(train_tokens):,} training bytes, "
        f"batch {batch} x seq {seq}, {torch.get_num_threads()} threads")

    def lr_at(step, total):
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(total - warmup, 1)
        return lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t, 1.0))))

    total = steps or 10**9
    t0 = time.perf_counter()
    step = 0
    ema = None
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total)
        starts = torch.randint(0, len(train_tokens) - seq - 1, (batch,), generator=gen)
        chunk = torch.stack([train_tokens[s:s + seq + 1] for s in starts.tolist()])
        logits = model(chunk[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if steps is None and step == 5:
            per_step = (time.perf_counter() - t0) / 5
            total = max(int(minutes * 60 / per_step), warmup + 10)
            log(f"  {per_step:.2f} s/step -> {total} steps for {minutes} min")
        if step % 50 == 0 or step == total:
            log(f"  step {step}/{total}  loss {ema:.3f} (ppl {np.exp(ema):.2f})  "
                f"lr {lr_at(step - 1, total):.2e}  {time.perf_counter() - t0:.0f} s")
        if eval_every and step % eval_every == 0 and step < total:
            model.eval()
            log(f"  step {step}: held-out perplexity {perplexity_torch(model, 'heldout'):.3f}")
            model.train()
    train_seconds = time.perf_counter() - t0
    model.eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    weights = out_dir / "tinylm.pt"
    torch.save(state, weights)
    result = {
        "config": CONFIG,
        "parameters": n_params,
        "data": data_description(),
        "training": {"seed": seed, "steps": total, "batch": batch, "seq": seq, "lr": lr,
                     "warmup": warmup, "weight_decay": weight_decay, "optimizer":
                     "AdamW(0.9, 0.95), cosine to 10%, clip 1.0",
                     "threads": torch.get_num_threads(), "seconds": round(train_seconds, 1),
                     "torch": torch.__version__},
        "perplexity": {"train": perplexity_torch(model, "train"),
                       "heldout": perplexity_torch(model, "heldout"),
                       "unigram_train": unigram_perplexity("train"),
                       "unigram_heldout": unigram_perplexity("heldout"),
                       "eval": f"non-overlapping windows of {TRAIN_SEQ} bytes"},
    }
    (out_dir / "tinylm.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"tinylm: {total} steps in {train_seconds:.0f} s; perplexity train "
        f"{result['perplexity']['train']:.3f}, held-out {result['perplexity']['heldout']:.3f}, "
        f"unigram held-out {result['perplexity']['unigram_heldout']:.2f}; wrote {weights}")
    return result
