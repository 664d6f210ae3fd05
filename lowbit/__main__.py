"""`python -m lowbit ...`: the same command line as the `lowbit` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
