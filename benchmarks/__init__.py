"""Performance benchmarks for remedis_tf (``python -m benchmarks.run``); not part of the tests."""
