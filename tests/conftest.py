"""Shared fixtures: a fresh plugin manager per test that asks for one."""
import pytest
import torch

from micronet.manager import Registries, get_plugin_manager


@pytest.fixture
def registries():
    """Registries of a fresh manager without third-party entry points."""
    return Registries.from_manager(get_plugin_manager(entry_points=False))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
