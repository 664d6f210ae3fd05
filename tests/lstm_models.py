"""A random nn.LSTM for the QuantLSTM tests (weights ~ N(0, 0.25²), eval mode)."""

import torch
from torch import nn


def random_lstm(rng, bidirectional=True, num_layers=2, batch_first=True, bias=True, input_size=40, hidden=32):
    lstm = nn.LSTM(input_size, hidden, num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    with torch.no_grad():
        for p in lstm.parameters():
            p.copy_(torch.randn(p.shape, generator=rng) * 0.25)
    return lstm.eval()
