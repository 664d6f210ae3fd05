"""Learned fake quantization for reconstruction-based PTQ (AdaRound, BRECQ, OmniQuant-style clipping).

One weight (N, K) on the packed format's own grid: per row and block of `group` input channels a scale s and a zero
z, codes q = clamp(round(w / s + z), 0, 2**bits - 1), dequantized ŵ = (q - z) · s. What can be learned:
  - "weights": w itself, through a straight-through round (the forward rounds, the backward passes the gradient);
  - "offsets": SignRound (AutoRound, Cheng et al., 2023): the same straight-through round of w + v · s0, with the
    rounding offset v kept in [-OFFSET_BOUND, OFFSET_BOUND] code steps (`LearnedWeight.project` after each step),
    meant for the signed-gradient update `sign_sgd_step` with a linearly decaying step (`linear_decay`);
  - "scales": s = s0 · exp(a) and z = z0 + b per block (clipping and offset; straight-through as well);
  - "rounding": AdaRound (Nagel et al., 2020): q = floor(w / s + z) + h(v), h the rectified sigmoid, with the
    annealed regulariser 1 - |2h - 1|**β pushing every h to 0 or 1; the hard code takes h >= 0.5.
Learned weights are parameterised in units of their block's starting step (w = w0 + d · s0), so one learning rate
suits every layer. Scales and zeros pass through the storage dtype (fp16) in the forward, with a straight-through
gradient, so what is trained is exactly what is packed: `LearnedWeight.pack` takes the codes from the same hard
forward and the scale/zero from the same rounding. Symmetric weights use the implicit zero 2**(bits-1), fixed
(round(x + 2**(b-1)) = round(x) + 2**(b-1) under round-half-to-even, so the codes are the format's).
Plain tensors only: no modules.
"""

from __future__ import annotations

import math

import torch

from .format import QuantizedWeight, group_size_for
from .packing import pack_bits
from .rtn import smallest_scale

ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid, so h reaches exactly 0 and 1
LEARNABLE = ("rounding", "scales", "weights", "offsets")
EXCLUSIVE = ("rounding", "weights", "offsets")  # three ways to move the codes: at most one
OFFSET_BOUND = 0.5  # SignRound's offsets stay within half a code step of the start


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """AdaRound's h(v) = clamp(sigmoid(v) (ζ - γ) + γ, 0, 1)."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def rectified_sigmoid_inverse(h: torch.Tensor) -> torch.Tensor:
    """v with h(v) = h for h in (0, 1); h is clipped to [0.01, 0.99] so v stays finite and trainable."""
    p = ((h.clamp(0.01, 0.99) - GAMMA) / (ZETA - GAMMA))
    return torch.log(p / (1 - p))


def rounding_regularizer(v: torch.Tensor, beta: float) -> torch.Tensor:
    """AdaRound's mean of 1 - |2 h(v) - 1|**β: 0 when every offset is 0 or 1, largest at 0.5."""
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).mean()


def annealed_beta(step: int, steps: int, start: float = 20.0, end: float = 2.0, warmup: float = 0.2) -> float | None:
    """β for this step: None during the warm-up (no regulariser), then from `start` down to `end` (AdaRound)."""
    first = int(warmup * steps)
    if step < first:
        return None
    frac = (step - first) / max(1, steps - first)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * frac))


def sign_sgd_step(params: list[torch.Tensor], lr: float) -> None:
    """p ← p - lr · sign(∂loss/∂p) for each tensor with a gradient (SignSGD, as SignRound uses); grads cleared.
    Every element moves by exactly lr (or 0 where its gradient is 0): the step is a budget in code units."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(lr * torch.sign(p.grad))
                p.grad = None


def linear_decay(step: int, steps: int) -> float:
    """The factor of the learning rate at step (1-based) of steps: 1 at the first, falling linearly towards 0 (the
    offsets then move at most lr · (steps + 1) / 2 in all)."""
    return max(0.0, (steps - step + 1) / steps) if steps > 0 else 0.0


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward, identity in the backward."""
    return x + (torch.round(x) - x).detach()


def storage_ste(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded through the storage dtype in the forward (what is packed), identity in the backward."""
    return x + (x.to(dtype).to(x.dtype) - x).detach()


def expand_blocks(t: torch.Tensor, group: int, k: int) -> torch.Tensor:
    """(N, nb) per-block values -> (N, K), each repeated over its block's channels (a short last block allowed)."""
    return t.repeat_interleave(group, dim=1)[:, :k]


class LearnedWeight:
    """Learnable fake quantization of one weight, started from a packed weight's grid.

    w_start: the weight (N, ...) the codes start from (the float weight for RTN/HQQ starts, the dequantized one when
    the start's codes are not the nearest, as GPTQ's); init: a `QuantizedWeight` giving bits, block, scale, zero.
    learn: a subset of LEARNABLE (at most one of EXCLUSIVE: "rounding", "weights", "offsets"); `signed` is True
    with "offsets" (trained with `sign_sgd_step`, then `project`). `parameters()` are the tensors to
    optimise; `weight(hard)` the fake-quantized weight in w_start's shape (float32); `pack()` the QuantizedWeight.
    """

    def __init__(self, w_start: torch.Tensor, init: QuantizedWeight, learn=("scales", "weights")):
        learn = set(learn)
        if not learn <= set(LEARNABLE) or len(learn & set(EXCLUSIVE)) > 1:
            raise ValueError(f"learn={sorted(learn)}: choose from {LEARNABLE}, at most one of 'rounding', 'weights' "
                             "and 'offsets'")
        self.shape, self.dtype = tuple(w_start.shape), init.dtype
        self.bits, self.block_size, self.symmetric = init.bits, init.block_size, init.symmetric
        self.scale_dtype = init.scale.dtype
        n = self.shape[0]
        self.w0 = w_start.detach().float().reshape(n, -1)
        self.k = self.w0.shape[1]
        self.group = group_size_for(self.k, self.block_size)
        self.s0 = init.scale.detach().float()
        self.z0 = init.zero_or_implicit().detach().float()
        self.learn = learn
        zeros = torch.zeros_like
        self.log_scale = zeros(self.s0).requires_grad_("scales" in learn)
        self.zero_shift = zeros(self.z0).requires_grad_("scales" in learn and not self.symmetric)
        self.signed = "offsets" in learn
        self.delta = zeros(self.w0).requires_grad_(bool({"weights", "offsets"} & learn))
        self.v = None
        if "rounding" in learn:
            u = self.w0 / expand_blocks(self.s0, self.group, self.k) + expand_blocks(self.z0, self.group, self.k)
            self.v = rectified_sigmoid_inverse(u - torch.floor(u)).requires_grad_(True)

    @classmethod
    def from_packed(cls, qw: QuantizedWeight, learn=("scales", "weights")) -> LearnedWeight:
        """Start from a packed weight itself (its dequantized values and grid)."""
        return cls(qw.dequantize(torch.float32), qw, learn)

    def parameters(self) -> list[torch.Tensor]:
        tensors = (self.log_scale, self.zero_shift, self.delta, self.v)
        return [t for t in tensors if t is not None and t.requires_grad]

    def project(self) -> None:
        """Keep SignRound's offsets in [-OFFSET_BOUND, OFFSET_BOUND] (a no-op for the other modes)."""
        if self.signed:
            with torch.no_grad():
                self.delta.clamp_(-OFFSET_BOUND, OFFSET_BOUND)

    def state(self) -> list[torch.Tensor]:
        """A copy of every learnable tensor (to restore the best step)."""
        return [t.detach().clone() for t in self.parameters()]

    def load_state(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for t, saved in zip(self.parameters(), state, strict=True):
                t.copy_(saved)

    def scale_zero(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored (fp16-rounded) scale and zero (N, nb), float32, differentiable."""
        tiny = smallest_scale(self.scale_dtype)
        scale = storage_ste((self.s0 * torch.exp(self.log_scale)).clamp_min(tiny), self.scale_dtype)
        zero = self.z0 if self.symmetric else storage_ste(self.z0 + self.zero_shift, self.scale_dtype)
        return scale, zero

    def _grid(self):
        s, z = self.scale_zero()
        s_full, z_full = expand_blocks(s, self.group, self.k), expand_blocks(z, self.group, self.k)
        w = self.w0 + self.delta * expand_blocks(self.s0, self.group, self.k)
        return w / s_full + z_full, s_full, z_full

    def codes(self) -> torch.Tensor:
        """The hard codes (N, K) as float32: exactly those `pack` stores."""
        with torch.no_grad():
            u = self._grid()[0]
            offset = torch.round(u) if self.v is None else torch.floor(u) + (rectified_sigmoid(self.v) >= 0.5)
            return offset.clamp_(0, (1 << self.bits) - 1)

    def weight(self, hard: bool = False) -> torch.Tensor:
        """The fake-quantized weight in the original shape, float32. hard: AdaRound's offsets rounded to 0/1 (the
        other modes are already hard in the forward)."""
        u, s_full, z_full = self._grid()
        qmax = (1 << self.bits) - 1
        if self.v is None:
            q = round_ste(u).clamp(0, qmax)
        elif hard:
            q = self.codes() + (u - u.detach()) * 0  # the packed codes; keeps the graph for the scales
        else:
            q = (torch.floor(u).detach() + rectified_sigmoid(self.v)).clamp(0, qmax)
        return ((q - z_full) * s_full).reshape(self.shape)

    def regularizer(self, beta: float) -> torch.Tensor:
        """AdaRound's rounding regulariser (0 when rounding is not learned)."""
        return rounding_regularizer(self.v, beta) if self.v is not None else self.w0.new_zeros(())

    def pack(self) -> QuantizedWeight:
        """The packed weight: hard codes, scale and zero in the storage dtype (the forward's own values)."""
        with torch.no_grad():
            s, z = self.scale_zero()
            codes = self.codes().to(torch.uint8)
            zero = None if self.symmetric else z.to(self.scale_dtype)
        return QuantizedWeight(packed=pack_bits(codes, self.bits), scale=s.to(self.scale_dtype), zero=zero,
                               shape=self.shape, dtype=self.dtype, bits=self.bits, block_size=self.block_size,
                               symmetric=self.symmetric, method="recon")

