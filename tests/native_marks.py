"""`needs_native`: skip a test that runs lowbit's native CPU kernel where it could not be built (no C compiler)."""

import pytest

from lowbit.kernels.cpu_native import available_native

needs_native = pytest.mark.skipif(not available_native(), reason="the native CPU kernel did not build here")
