"""The binary index: codes, filters, growth, removal."""

from __future__ import annotations

import numpy as np

from appliance.store.index import BinaryIndex, IndexFilter, sign_codes


def _fill(index: BinaryIndex, vectors: np.ndarray, start: int = 1) -> None:
    n = len(vectors)
    index.add(np.arange(start, start + n, dtype=np.int64), vectors, (np.arange(n) % 4).astype(np.uint8),
              (np.arange(n) % 3).astype(np.int32), np.arange(n, dtype=np.float64))


def test_sign_codes_pad_to_whole_words() -> None:
    codes = sign_codes(np.array([[1.0] * 70 + [-1.0] * 30], dtype=np.float32))
    assert codes.shape == (1, 2)
    bits = np.unpackbits(codes.view(np.uint8))
    assert bits[:70].all() and not bits[70:].any()


def test_nearest_finds_itself_and_grows() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((5000, 384)).astype(np.float32)
    index = BinaryIndex(384, capacity=16)
    _fill(index, vectors)
    assert index.size == index.live == 5000
    for i in (0, 1234, 4999):
        assert i + 1 in index.nearest(vectors[i], 5).tolist()


def test_filters_and_removal() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((300, 32)).astype(np.float32)
    index = BinaryIndex(32)
    _fill(index, vectors)
    where = IndexFilter(kinds=frozenset({1}), sources=frozenset({2}), since=10, until=200)
    allowed = index.allowed_ids(where)
    rows = allowed - 1
    assert len(allowed) and ((rows % 4) == 1).all() and ((rows % 3) == 2).all()
    assert ((rows >= 10) & (rows <= 200)).all()
    assert set(index.nearest(vectors[0], 1000, where).tolist()) == set(allowed.tolist())
    index.remove(int(allowed[0]))
    assert int(allowed[0]) not in index.allowed_ids(where).tolist()
    assert index.live == 299
    assert index.nearest(vectors[0], 10, IndexFilter(sources=frozenset())).size == 0


def test_exact_mode_ranks_by_dot_product() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((100, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = BinaryIndex(16, keep_floats=True)
    _fill(index, vectors)
    ids, scores = index.exact(vectors[42], 3)
    assert 43 in ids.tolist() and np.isclose(scores.max(), 1.0)
