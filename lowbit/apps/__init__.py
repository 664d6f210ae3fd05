"""Applications built on the layered packages: `validate` (a compressed model against its original) and `demo`
(the bundled MiniLM compressed every way). They use every layer and nothing uses them but the CLI (and the
benchmark suites, which time with `timing`, the one timer)."""
