"""The conv + BatchNorm + grouped conv + 2-layer BiLSTM + Linear test model and its task, shared by the data-aware
tests (test_dataaware.py, test_recon.py)."""

import torch
import torch.nn.functional as F
from torch import nn


class SeqNet(nn.Module):
    """A small OCR-like sequence tagger: (B, C, T) -> (B, T, classes)."""

    def __init__(self, c_in=16, ch=64, hidden=32, classes=12):
        super().__init__()
        self.conv = nn.Conv1d(c_in, ch, 5, padding=2)
        self.bn = nn.BatchNorm1d(ch)
        self.mix = nn.Conv2d(ch, ch, (1, 3), padding=(0, 1), groups=4)
        self.lstm = nn.LSTM(ch, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = torch.relu(self.mix(h.unsqueeze(2))).squeeze(2)
        out, _ = self.lstm(h.transpose(1, 2))
        return self.fc(out)


def task(gen, n, t=24, c_in=16, classes=12):
    """Inputs (n, C, T) and labels (n, T): the class is the argmax of a fixed projection of a local window."""
    proj = torch.randn(classes, c_in * 3, generator=torch.Generator().manual_seed(7))
    x = torch.randn(n, c_in, t, generator=gen)
    win = F.pad(x, (1, 1)).unfold(2, 3, 1).permute(0, 2, 1, 3).reshape(n, t, -1)  # (n, T, C*3)
    return x, (win @ proj.T).argmax(-1)


def train_seqnet(steps=300):
    """SeqNet trained for a few seconds (~86% accuracy) and the generator that made its data (for more data)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: two OpenMP threads on a busy 2-core machine wait on each other
    try:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        model = SeqNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            x, y = task(gen, 32, t=16)
            loss = F.cross_entropy(model(x).reshape(-1, 12), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), gen


def accuracy(model, data):
    x, y = data
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()
