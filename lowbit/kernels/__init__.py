"""Compute on compressed weights: one module per kernel family, no configs, no nn.Modules.

Triton on GPUs (triton_gemv, triton_gemm, triton_int8, with triton_common), lowbit's native C kernels on CPUs
(cpu_native, served through cpu_int4), torch's own quantized CPU ops (cpu_int8, cpu_int4; checked by torch_ops),
and the plain float64-capable reference. The runtime chooses among them; see docs/DESIGN.md.
"""
