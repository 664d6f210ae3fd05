"""A BERT-named attention pair for the AWQ tests: value -> output.dense folds; value reads the model input."""

import torch
from torch import nn


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = nn.Module()
        self.self.value = nn.Linear(64, 64)
        self.output = nn.Module()
        self.output.dense = nn.Linear(64, 64)

    def forward(self, x):
        return self.output.dense(torch.softmax(x @ x.transpose(1, 2), -1) @ self.self.value(x))
