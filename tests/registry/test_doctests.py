"""The examples in the registry's docstrings run and print what they claim."""

import doctest

import pytest

from perennial.registry import store, tensorfile, versions


@pytest.mark.parametrize("module", [versions, tensorfile, store], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
