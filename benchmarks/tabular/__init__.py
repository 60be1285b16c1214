"""The tabulated benchmark: a finite freezing space, its table of learning curves, and searches
replayed against it (``benchmarks/tabular_search.py``; see ``benchmarks/README.md``)."""
