"""QuantizedWeight.dequantize_rows: the rows of dequantize(), without the whole float weight."""

import pytest
import torch

from lowbit.quant import QuantConfig
from lowbit.quant.quantize import quantize_weight


@pytest.mark.parametrize("bits, block, shape", [(4, 32, (13, 96)), (3, 16, (9, 40)), (8, -1, (7, 24)),
                                                (2, 16, (5, 4, 3, 3)), (16, -1, (6, 10))])
def test_row_ranges_equal_the_whole_dequantization(bits, block, shape):
    g = torch.Generator().manual_seed(bits)
    qw = quantize_weight(torch.randn(*shape, generator=g), QuantConfig(bits=bits, block_size=block))
    whole = qw.dequantize(torch.float32).reshape(shape[0], -1)
    for start, stop in [(0, shape[0]), (1, 3), (shape[0] - 1, shape[0])]:
        assert torch.equal(qw.dequantize_rows(start, stop, torch.float32), whole[start:stop])
