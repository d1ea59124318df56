"""Tests of ``rootml serve`` (``src/rootml/server/``), one file per module; the trained bundles
and helpers they share are in :mod:`server.helpers`, the fixtures in ``conftest.py``.

A package, so that ``conftest.py``, the test files and ``tests/test_publishing.py`` all import
one ``server.helpers`` (and so share one training of the bundles per pytest process)."""
