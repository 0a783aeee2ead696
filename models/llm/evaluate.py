"""Perplexity and greedy generation through ONNX Runtime, for any form (see ``feeds``), and
the same perplexity in PyTorch on the same windows as the reference every form must match.

Perplexity: the texts are joined, tokenized once and cut into full, non-overlapping windows
of ``window`` tokens (``texts.token_windows``); every window starts with an empty context
(empty past, positions from 0), and the score is exp(mean NLL of tokens 1..window-1 given
the tokens before them in the window), over all windows. Log-softmax in float64.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from .feeds import graph_inputs, has_past, make_feeds, presents_to_past

FORMS_WITH_PAST = ("optimum", "genai")


def session(path: str | pathlib.Path, threads: int | None = None):
    """A CPU InferenceSession with ORT's log lines at error level only (its warnings about
    unused initializers and fallback kernels are noise to whoever runs a benchmark)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _check_form(path: str | pathlib.Path, form: str | None) -> None:
    """A form name that contradicts the graph is a caller's mix-up worth stopping on."""
    if form is None:
        return
    past = has_past(graph_inputs(path))
    if past != (form in FORMS_WITH_PAST):
        raise ValueError(f"{path}: form {form!r} {'expects' if not past else 'does not expect'} "
                         f"past_key_values inputs, the graph {'has' if past else 'has none'}")


def _nll(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Summed negative log-likelihood of ``targets`` [b, s-1] under logits [b, s-1, V]."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(x).sum(axis=-1))
    picked = np.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
    return float((logz - picked).sum()), targets.size


def perplexity(onnx_path: str | pathlib.Path, texts: list[str], form: str | None = None,
               window: int = 128, batch: int = 8, max_windows: int | None = None,
               sess=None) -> float:
    """Perplexity of the ONNX model at ``onnx_path`` on ``texts`` (see the module doc).
    ``form`` is checked against the graph when given; the feeds follow the graph's inputs.
    ``sess`` reuses an open session."""
    from .texts import token_windows

    _check_form(onnx_path, form)
    inputs = graph_inputs(onnx_path)
    sess = sess or session(onnx_path)
    windows = token_windows(texts, window, max_windows)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        (logits,) = sess.run(["logits"], make_feeds(inputs, chunk))
        nll, n = _nll(logits[:, :-1], chunk[:, 1:])
        total, count = total + nll, count + n
    return float(np.exp(total / count))


def perplexity_torch(texts: list[str], window: int = 128, batch: int = 8,
                     max_windows: int | None = None, model=None) -> float:
    """The same perplexity with the dense PyTorch model (``fetch.load_torch()``): the
    reference every exported form must reproduce."""
    import torch

    from .fetch import load_torch
    from .texts import token_windows

    model = model or load_torch("eager")
    windows = token_windows(texts, window, max_windows)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch):
            chunk = windows[start:start + batch]
            ids = torch.from_numpy(chunk)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
            nll, n = _nll(logits[:, :-1].numpy(), chunk[:, 1:])
            total, count = total + nll, count + n
    return float(np.exp(total / count))


def _prompt_ids(prompt: str, chat: bool) -> list[int]:
    from .fetch import tokenizer

    tok = tokenizer()
    if chat:  # SmolLM2-Instruct is tuned on its chat template; a bare prompt rambles more
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        return list(tok(text)["input_ids"])
    return list(tok(prompt)["input_ids"])


def generate(onnx_path: str | pathlib.Path, prompt: str, form: str | None = None,
             max_new_tokens: int = 20, chat: bool = True, sess=None) -> str:
    """Greedy decoding, batch 1; returns the new text only. Forms with a KV cache run one
    prompt step with an empty past, then one token per step with the presents fed back;
    forms without one rerun the whole sequence each step. Stops at ``<|im_end|>``."""
    from .fetch import tokenizer

    _check_form(onnx_path, form)
    inputs = graph_inputs(onnx_path)
    sess = sess or session(onnx_path)
    out_names = [o.name for o in sess.get_outputs()]
    eos = tokenizer().convert_tokens_to_ids("<|im_end|>")
    ids = _prompt_ids(prompt, chat)
    new: list[int] = []
    past = None
    step = np.array([ids], dtype=np.int64)
    for _ in range(max_new_tokens):
        outs = sess.run(out_names, make_feeds(inputs, step, past))
        logits = outs[out_names.index("logits")]
        token = int(logits[0, -1].argmax())
        if token == eos:
            break
        new.append(token)
        if has_past(inputs):
            past = presents_to_past(out_names, outs)
            step = np.array([[token]], dtype=np.int64)
        else:
            step = np.array([ids + new], dtype=np.int64)
    return tokenizer().decode(new, skip_special_tokens=True)


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - t0
