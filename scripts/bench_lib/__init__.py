"""The benchmark suite run by ``scripts/bench``: datasets, scenarios and the report."""
