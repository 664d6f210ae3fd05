"""`import lowbit` is cheap: no GPU, no Triton, no environment reads, public names resolve lazily."""

import subprocess
import sys

import pytest


def test_import_touches_no_gpu_and_no_triton():
    code = (
        "import sys, torch, lowbit\n"
        "assert not torch.cuda.is_initialized(), 'cuda initialised at import'\n"
        "assert 'triton' not in sys.modules, 'triton imported at import'\n"
        "assert 'lowbit.nn' not in sys.modules\n"
        "print(lowbit.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == __import__("lowbit").__version__


def test_public_names_resolve():
    import lowbit

    assert lowbit.QuantConfig().bits == 4
    assert callable(lowbit.quantize_weight)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lowbit.nope  # noqa: B018
