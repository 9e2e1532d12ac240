"""Test tiers: ``make test-fast`` runs everything not marked ``slow`` (unit tests on tiny in-process models, under
two minutes on two cores); ``make test`` runs everything, including the notebooks under nbval and the end-to-end
runs on the embedded model."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs notebooks or the embedded model end to end (make test only)")
