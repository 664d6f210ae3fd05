"""The `lowbit` command line."""

import sys


def main(argv=None) -> int:
    print("lowbit: no commands yet", file=sys.stderr)
    return 1
