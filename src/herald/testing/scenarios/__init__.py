"""The conformance scenarios, one module per theme; the list is in :mod:`..conformance`."""
