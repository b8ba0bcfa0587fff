"""Measuring the method on a real model: the fidelity harness (:mod:`.fidelity`) and its texts (:mod:`.corpora`).

The model is always passed in; loading one (GGUF files, caches) is the application's business.
"""
