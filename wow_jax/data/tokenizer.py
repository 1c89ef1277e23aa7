"""umT5 tokenization exactly as Wan2.1 prepares captions for its text encoder.

Wan's `HuggingfaceTokenizer(name, seq_len=text_len, clean='whitespace')` (wan/modules/tokenizers.py)
cleans each caption (ftfy mojibake repair, HTML unescape twice, strip, every whitespace run -> one
space), then calls the umT5 sentencepiece tokenizer with EOS appended, truncation to `text_len`
(the EOS is kept as the last token) and padding with the pad id (0) to `text_len`.

    Tokenizer(spm_path, text_len).encode(captions: list[str]) -> ids [B, L] int32, mask [B, L] int32

An empty caption is valid: it is just EOS (the unconditional embedding for classifier-free
guidance). Captions longer than `text_len` are truncated; the first truncation logs a warning.
"""

import html
import os
from collections.abc import Sequence

import ftfy
import numpy as np
import regex
import sentencepiece
from absl import logging

CONFIG_KEY = "config.model.text.tokenizer_path"
# Sentinel tokens <extra_id_0..N-1> that transformers' T5 tokenizer adds after the spm pieces
# (<extra_id_0> gets the highest id) when built from a bare spiece.model; like it, we read them
# in a caption as single tokens. Only captions that spell out such a sentinel are affected.
EXTRA_IDS = 100
_WHITESPACE = regex.compile(r"\s+")


def clean(text: str) -> str:
    """Wan's clean='whitespace': ftfy.fix_text, html.unescape twice, collapse whitespace, strip."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


class Tokenizer:
    """The umT5 sentencepiece model at `spm_path`, padding/truncating to `text_len` tokens."""

    def __init__(self, spm_path: str, text_len: int, extra_ids: int = EXTRA_IDS):
        if not spm_path or not os.path.isfile(spm_path):
            raise FileNotFoundError(
                f"umT5 sentencepiece model not found at {spm_path!r} ({CONFIG_KEY}); set "
                f"--{CONFIG_KEY}=/path/to/spiece.model (the 'spiece.model' of google/umt5-xxl, "
                "shipped in the google/umt5-xxl folder of the Wan2.1 weights)"
            )
        if text_len < 1:
            raise ValueError(f"config.model.text.text_len must be >= 1, got {text_len}")
        self.spm_path = spm_path
        self.text_len = int(text_len)
        self._sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
        self.eos_id = self._sp.eos_id()
        if self.eos_id < 0:
            raise ValueError(
                f"{spm_path} defines no EOS piece; umT5 needs one (`</s>`, id 1). Use the umT5 "
                "spiece.model or train with eos_id set"
            )
        self.pad_id = max(self._sp.pad_id(), 0)  # T5 pads with id 0.
        self.vocab_size = self._sp.get_piece_size()
        self.extra_ids = int(extra_ids)
        self._special = self._special_tokens()
        self._special_pattern = regex.compile(
            "("
            + "|".join(regex.escape(t) for t in sorted(self._special, key=len, reverse=True))
            + ")"
        )
        self.num_truncated = 0  # Captions truncated so far (only the first is logged).

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """captions (B strings) -> (ids [B, text_len] int32, mask [B, text_len] int32)."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise ValueError(
                f"Tokenizer.encode expects a list of strings, got {type(captions).__name__}; "
                "wrap a single caption as [caption]"
            )
        pieces = [self._pieces(clean(c)) for c in captions]
        ids = np.full((len(captions), self.text_len), self.pad_id, np.int32)
        mask = np.zeros((len(captions), self.text_len), np.int32)
        for row, tokens in enumerate(pieces):
            if len(tokens) + 1 > self.text_len:
                self._report_truncation(captions[row], len(tokens) + 1)
                tokens = tokens[: self.text_len - 1]
            tokens = list(tokens) + [self.eos_id]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def _special_tokens(self) -> dict[str, int]:
        """Surface strings read as one token, as transformers does: control pieces (`<pad>`,
        `</s>`), `<unk>`, and the sentinels `<extra_id_k>` missing from the spm vocabulary."""
        sp, size = self._sp, self._sp.get_piece_size()
        special = {
            sp.id_to_piece(i): i for i in range(size) if sp.is_control(i) or sp.is_unknown(i)
        }
        for k in range(self.extra_ids):
            piece = f"<extra_id_{k}>"
            if sp.piece_to_id(piece) == sp.unk_id():
                special.setdefault(piece, size + self.extra_ids - 1 - k)
        return special

    def _pieces(self, text: str) -> list[int]:
        """Token ids of one cleaned caption (no EOS); special-token strings split the text and
        each remaining segment is tokenized on its own."""
        ids = []
        for i, segment in enumerate(self._special_pattern.split(text)):
            if i % 2:
                ids.append(self._special[segment])
            elif segment.strip():
                ids.extend(self._sp.encode(segment.strip(), out_type=int))
        return ids

    def _report_truncation(self, caption: str, length: int) -> None:
        if self.num_truncated == 0:
            logging.warning(
                "Caption of %d tokens (with EOS) truncated to text_len=%d, as Wan does: %.60r... "
                "Further truncations are not reported.",
                length,
                self.text_len,
                caption,
            )
        self.num_truncated += 1


def train_spm(sentences, model_prefix: str, vocab_size: int) -> str:
    """Trains a small umT5-style sentencepiece model (pad 0, eos 1, unk 2, no bos) on an
    iterable of sentences, for demos without the real umT5 vocabulary (e.g. Meta-World task
    captions). `vocab_size` is an upper bound (small corpora get fewer pieces). Returns the
    path of the written `<model_prefix>.model`."""
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    return model_prefix + ".model"
