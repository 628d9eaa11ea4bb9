"""Other SDKs as clients of the local node: their flows, the image they use (see tests/fidelity/test_golem_js.py)."""
