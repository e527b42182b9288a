import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from hub import settings  # noqa: E402


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder; tests that need it are skipped with the reason when it is absent."""
    path = settings.data_dir()
    if path is None:
        pytest.skip("shared data folder not found: set REST_DATA_DIR")
    return path
