def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden generated files")


def pytest_configure(config):
    # Large files' digests are remembered across processes (ectc/plan/records.py): keep the
    # tests' memo out of the user's cache folder.
    import os
    import tempfile

    os.environ.setdefault("ECTC_CACHE_DIR", tempfile.mkdtemp(prefix="ectc-test-cache-"))
