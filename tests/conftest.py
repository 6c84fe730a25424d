import pytest
import torch

import medsight_lab as ml

torch.set_num_threads(1)  # tiny tensors: 2 threads barely help and stall badly when a core is busy


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
