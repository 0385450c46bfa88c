"""Root conftest for kafka-python's test suite as run by Tidelog's conformance harness.

The integration fixtures are all in test/integration/conftest.py (shipped in the sdist); this
file only makes `test/` a conftest root so that file is found the same way upstream's layout does.
"""
