"""The umT5 tokenizer equals Wan's pipeline: cleaning + the HF tokenizer of the same spm file."""

import html
import json
import logging
import random

import ftfy
import numpy as np
import pytest
import regex
import sentencepiece

from wow_jax.data import tokenizer as tokenizer_lib

_SYLLABLES = (
    "ro bot arm pick up red blo ck pla ce dra wer o pen clo se push but ton rea ch grip per cu be "
    "ta ble le ft ri ght slow ly ka zu mi ne"
)
_UNICODE_WORDS = "café naïve résumé Zürich ÅÄÖ 机器人 拿起 红色 方块 ロボット «quote» — dash"

TRICKY_CAPTIONS = [
    "pick up the red block and place it in the drawer",
    "",
    "   ",
    "  push\tthe   button \n\n slowly  ",
    "Le robot saisit le cube, café naïve résumé — Zürich «quote»",
    "机器人 拿起 红色 方块 ロボット 😀 ✓ ﬁ ① Ｆｕｌｌｗｉｄｔｈ",
    "mojibake: cafÃ© and html &amp;amp; &lt;b&gt; entities",
    "open the drawer " * 40,  # Longer than any test text_len: truncated.
    "<pad> </s> <unk> literal special-token text<extra_id_3>x",
]


def train_spm(directory, byte_fallback: bool = False) -> str:
    """Trains a 300-piece umT5-style sentencepiece model (pad 0, eos 1, unk 2, no bos) in ~0.1 s
    on a generated corpus and returns the path of `spiece.model` in `directory`. With
    `byte_fallback` (as umT5's vocabulary has) unknown characters become UTF-8 byte pieces."""
    rng, syllables = random.Random(0), _SYLLABLES.split()
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)]
    words += _UNICODE_WORDS.split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    prefix = str(directory / "spiece")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=prefix,
        vocab_size=600 if byte_fallback else 300,  # + the 256 byte pieces
        byte_fallback=byte_fallback,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=0.995,
        minloglevel=2,
    )
    return prefix + ".model"


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def byte_fallback_spm_path(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm_bytes"), byte_fallback=True)


def wan_clean(text):
    """wan/modules/tokenizers.py whitespace_clean(basic_clean(text)), written out independently."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


def hf_reference(spm_path, captions, text_len, byte_fallback=False):
    """What Wan's HuggingfaceTokenizer(seq_len=text_len, clean='whitespace') returns.

    transformers converts a bare spiece.model to a fast tokenizer without byte fallback, while
    umT5's tokenizer is expected to use it (huggingface/tokenizers#1217 added Unigram byte
    fallback for umT5), so for such a vocabulary the flag is switched back on."""
    import pathlib

    import tokenizers
    import transformers

    hf = transformers.T5TokenizerFast.from_pretrained(str(pathlib.Path(spm_path).parent))
    if byte_fallback:
        state = json.loads(hf.backend_tokenizer.to_str())
        state["model"]["byte_fallback"] = True
        hf._tokenizer = tokenizers.Tokenizer.from_str(json.dumps(state))
    out = hf(
        [wan_clean(c) for c in captions],
        padding="max_length",
        truncation=True,
        max_length=text_len,
        add_special_tokens=True,
        return_tensors="np",
    )
    return out["input_ids"], out["attention_mask"]


@pytest.mark.parametrize("text_len", [16, 64])
def test_matches_hugging_face_tokenizer(spm_path, text_len):
    ids, mask = tokenizer_lib.Tokenizer(spm_path, text_len).encode(TRICKY_CAPTIONS)
    want_ids, want_mask = hf_reference(spm_path, TRICKY_CAPTIONS, text_len)
    assert ids.dtype == np.int32 and ids.shape == (len(TRICKY_CAPTIONS), text_len)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    # Not trivially equal: real pieces, unknowns and EOS all occur.
    last = ids[np.arange(len(ids)), mask.sum(axis=1) - 1]
    assert len(np.unique(ids)) > 10 and (ids == 2).any() and (last == 1).all()


def test_byte_fallback_vocabulary_matches_umt5_style_tokenizer(byte_fallback_spm_path):
    ids, mask = tokenizer_lib.Tokenizer(byte_fallback_spm_path, 64).encode(TRICKY_CAPTIONS)
    want_ids, want_mask = hf_reference(byte_fallback_spm_path, TRICKY_CAPTIONS, 64, True)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    byte_pieces = (ids >= 3) & (ids < 3 + 256)  # <0x00>..<0xFF> follow pad, eos, unk
    assert byte_pieces.sum() > 10  # Unknown characters really went through byte fallback.


def test_empty_caption_is_eos_only(spm_path):
    ids, mask = tokenizer_lib.Tokenizer(spm_path, 8).encode(["", " \t\n "])
    np.testing.assert_array_equal(ids, [[1, 0, 0, 0, 0, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(mask, [[1, 0, 0, 0, 0, 0, 0, 0]] * 2)


def test_long_caption_truncated_with_one_warning(spm_path, caplog):
    tok = tokenizer_lib.Tokenizer(spm_path, 8)
    long = "open the drawer and push the button " * 20
    with caplog.at_level(logging.WARNING):
        ids, mask = tok.encode([long, "reach", long])
        tok.encode([long])
    warnings = [r for r in caplog.records if "truncated to text_len=8" in r.getMessage()]
    assert len(warnings) == 1 and tok.num_truncated == 3
    assert mask[0].all() and ids[0, -1] == 1 and mask[1].sum() < 8


def test_missing_spm_file_names_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.model\.text\.tokenizer_path"):
        tokenizer_lib.Tokenizer(str(tmp_path / "missing.model"), 16)
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        tokenizer_lib.Tokenizer("", 16)


def test_rejects_a_bare_string(spm_path):
    with pytest.raises(ValueError, match="list of strings"):
        tokenizer_lib.Tokenizer(spm_path, 16).encode("pick up the block")


def test_train_spm_for_small_demo_corpora(tmp_path):
    captions = ["reach the goal", "push the puck to the goal", "open the drawer"] * 5
    path = tokenizer_lib.train_spm(captions, str(tmp_path / "demo"), vocab_size=1024)
    tok = tokenizer_lib.Tokenizer(path, 12)
    assert tok.vocab_size <= 1024 and (tok.pad_id, tok.eos_id) == (0, 1)
    ids, mask = tok.encode(["push the drawer"])
    assert 2 not in ids[0, : mask.sum()]  # Every word of the corpus is known.
