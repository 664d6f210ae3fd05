import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.quant.packing import pack_bits, pack_words, packed_row_bytes, unpack_bits, unpack_words


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), n=st.integers(1, 7), k=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip_is_exact(bits, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 1 << bits, (n, k), generator=g, dtype=torch.uint8)
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (n, packed_row_bytes(k, bits)) == (n, (k * bits + 7) // 8)
    assert torch.equal(unpack_bits(packed, bits, k), q)


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([2, 4, 8]), n=st.integers(1, 5), k=st.integers(1, 200), seed=st.integers(0, 2**31 - 1))
def test_word_packing_round_trip_is_exact(bits, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 1 << bits, (n, k), generator=g, dtype=torch.uint8)
    words = pack_words(q, bits)
    assert words.dtype == torch.int32 and words.shape == (n, -(-k // (32 // bits)))
    assert torch.equal(unpack_words(words, bits, k), q)


def test_bit_order_is_little_endian_stream():
    # 3-bit values 1..8 (mod 8): value j occupies stream bits [3j, 3j+3), byte i holds stream bits 8i..8i+7
    q = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0]], dtype=torch.uint8)
    stream = sum(int(v) << (3 * j) for j, v in enumerate(q[0]))
    expected = [(stream >> (8 * i)) & 0xFF for i in range(3)]
    assert pack_bits(q, 3).tolist() == [expected]
    # int32 words: value j at bits [4*(j % 8), ...) of word j // 8
    assert pack_words(q, 4).item() == sum(int(v) << (4 * j) for j, v in enumerate(q[0]))


def test_large_rows_use_chunks_and_stay_exact():
    q = torch.randint(0, 8, (3, 1_500_001), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(unpack_bits(pack_bits(q, 3), 3, q.shape[1]), q)


@pytest.mark.parametrize("bits", [0, 9])
def test_bad_bits_rejected(bits):
    with pytest.raises(ValueError, match="bits"):
        pack_bits(torch.zeros(2, 8, dtype=torch.uint8), bits)


def test_wrong_packed_width_rejected():
    with pytest.raises(ValueError, match="needs 3"):
        unpack_bits(torch.zeros(1, 4, dtype=torch.uint8), 3, 8)


def test_word_packing_needs_a_container_width():
    with pytest.raises(ValueError, match="bits in"):
        pack_words(torch.zeros(1, 8, dtype=torch.uint8), 3)
