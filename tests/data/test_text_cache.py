"""Text-embedding cache: what the data pipeline reads back equals a direct encoder call."""

import copy
import json
import pickle

import grain
import jax
import numpy as np
import pytest

from tests.data.test_tokenizer import train_spm
from wow_jax.data import text_cache
from wow_jax.data.tokenizer import Tokenizer
from wow_jax.models import text_encoder

CAPTIONS = [
    "pick up the red block",
    "open the drawer",
    "pick up the red block",  # Duplicate: encoded once.
    "  push the   button  ",
    "机器人 拿起 红色 方块 café",
    "open the drawer and push the button " * 10,  # Truncated to text_len.
    "reach the goal",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from configs import tiny

    text_cfg = tiny.get_config().model.text
    text_cfg.tokenizer_path = train_spm(tmp_path_factory.mktemp("spm"))
    params = text_encoder.init_params(text_cfg, jax.random.key(0))
    return text_cfg, params, Tokenizer(text_cfg.tokenizer_path, text_cfg.text_len)


def direct(text_cfg, params, tokenizer, captions):
    """Each caption through the encoder on its own (batch of 1): [len(captions), L, dim]."""
    apply = jax.jit(text_encoder.create(text_cfg).apply)  # One compilation for all captions.
    return np.stack(
        [np.asarray(apply({"params": params}, *tokenizer.encode([c])))[0] for c in captions]
    )


def test_round_trip_equals_direct_encoder_call(encoder, tmp_path):
    text_cfg, params, tokenizer = encoder
    encode_fn = text_cache.make_encode_fn(text_encoder.create(text_cfg), params)
    cache = text_cache.TextEmbeddingCache.write(
        str(tmp_path), CAPTIONS, tokenizer, encode_fn, batch_size=4, dtype="float32"
    )
    assert len(cache) == 1 + len(set(CAPTIONS))  # + the empty (unconditional) caption
    reader = text_cache.TextEmbeddingCache(str(tmp_path), text_cfg)
    wants = direct(text_cfg, params, tokenizer, CAPTIONS + [""])
    for caption, want in zip(CAPTIONS + [""], wants, strict=True):
        got = reader.lookup(caption)
        assert got.shape == (text_cfg.text_len, text_cfg.dim) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # batch 4 vs 1
    # Trimmed storage: the empty caption keeps one token (EOS), the long one all text_len.
    lengths = {r["caption"]: len(r["embedding"]) for r in (reader[i] for i in range(len(reader)))}
    assert lengths[""] == 1 and lengths[CAPTIONS[5]] == text_cfg.text_len
    batch = reader.lookup_batch(CAPTIONS[:2])
    assert batch.shape == (2, text_cfg.text_len, text_cfg.dim)
    # Grain random access, also from a pickled copy (worker processes).
    dataset = grain.MapDataset.source(pickle.loads(pickle.dumps(reader)))
    assert {dataset[i]["caption"] for i in range(len(dataset))} == set(CAPTIONS) | {""}


def test_bfloat16_storage(encoder, tmp_path):
    text_cfg, params, tokenizer = encoder
    encode_fn = text_cache.make_encode_fn(text_encoder.create(text_cfg), params)
    cache = text_cache.TextEmbeddingCache.write(
        str(tmp_path), CAPTIONS[:2], tokenizer, encode_fn, batch_size=2, dtype="bfloat16"
    )
    got = cache.lookup(CAPTIONS[0])
    assert got.dtype == jax.numpy.bfloat16
    want = direct(text_cfg, params, tokenizer, CAPTIONS[:1])[0]
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_bad_input(encoder, tmp_path):
    text_cfg, params, tokenizer = encoder
    with pytest.raises(FileNotFoundError, match="scripts.cache_text_embeddings"):
        text_cache.TextEmbeddingCache(str(tmp_path / "none"))
    encode_fn = text_cache.make_encode_fn(text_encoder.create(text_cfg), params)
    cache = text_cache.TextEmbeddingCache.write(str(tmp_path), ["a"], tokenizer, encode_fn, 2)
    with pytest.raises(KeyError, match="not in the text-embedding cache"):
        cache.lookup("never written")
    wrong = copy.deepcopy(text_cfg)
    wrong.dim = 64
    with pytest.raises(ValueError, match="config.model.text.dim=64"):
        text_cache.TextEmbeddingCache(str(tmp_path), wrong)


def test_script_writes_a_readable_cache(encoder, tmp_path):
    from configs import tiny
    from scripts import cache_text_embeddings as script

    text_cfg, params, tokenizer = encoder
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps({"caption": c}) for c in CAPTIONS[:3]))
    config = tiny.get_config()
    config.model.text.tokenizer_path = text_cfg.tokenizer_path
    config.data.path = str(tmp_path / "episodes")
    cache = script.run(config, str(captions), batch_size=3)  # 3 rounds up to the 8 devices
    assert cache.directory == str(tmp_path / "episodes" / "text_embeddings")
    want_params = text_encoder.init_params(config.model.text, jax.random.key(config.seed))
    want = direct(config.model.text, want_params, tokenizer, CAPTIONS[1:2])[0]
    np.testing.assert_allclose(cache.lookup(CAPTIONS[1]).astype(np.float32), want, atol=2e-2)
    config.model.text.embedding_cache = cache.directory
    assert CAPTIONS[0] in text_cache.from_config(config.model.text)
