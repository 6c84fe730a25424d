import pytest
import torch

import medsight_lab as ml

torch.set_num_threads(1)  # tiny tensors: 2 threads barely help and stall badly when a core is busy


@pytest.hookimpl(tryfirst=True)    # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist with `--dist loadgroup` (scripts/test.sh), the tests of a module that
    builds something once for the whole module (a module-scoped fixture: a book, a graded class,
    an nbgrader course) run on one worker, so it is built once; every other test goes wherever
    a worker is free. Without xdist the marker does nothing."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        definitions = fixtures.name2fixturedefs.values() if fixtures else []
        if any(defs and defs[-1].scope == "module" for defs in definitions):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def dataset():
    return ml.SyntheticRadiologyDataset(200, seed=0)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return ml.default_model().eval()


@pytest.fixture(scope="session")
def trained(dataset):
    """A model trained briefly: enough for generation to write real reports."""
    torch.manual_seed(0)
    m = ml.default_model()
    ml.train(m, ml.SyntheticRadiologyDataset(600, seed=3), epochs=6, progress=False)
    return m.eval()
