"""Every docstring example in perennial runs and prints what it claims: the examples are the docs."""

import doctest
import importlib
import pkgutil

import pytest

import perennial

MODULES = sorted(m.name for m in pkgutil.walk_packages(perennial.__path__, "perennial."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
