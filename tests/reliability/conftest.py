import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The tiny toy corpus (8 narrated videos) of the reliability runs, rendered once per test session."""
    from reliability_runs import make_tiny_corpus

    return make_tiny_corpus(tmp_path_factory.mktemp("reliability_toy") / "corpus")
