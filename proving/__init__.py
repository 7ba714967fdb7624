"""Proving the workbench: benchmarks, failure drills, soak runs, the sample lake and the
demo data.

This package imports the product (``workbench``, ``ingest_service``, ``simulator``);
the product never imports it (``tests/test_layout.py`` checks both). Its verbs
(``workbench bench | drill | soak``), benchmarks, drills and demo data reach the
``workbench`` command through entry points (:mod:`workbench.plugins`).
"""
