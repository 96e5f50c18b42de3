"""The suite's own rule: a skip that is not listed in tests/skips.py fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                          "from skips import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary\n")
    pytester.makepyfile(test_a="""
import pytest

def test_runs():
    assert True

def test_cuda_branch():
    pytest.skip("a CUDA provider is present here")
""")
    return pytester


def test_allowed_skips_pass(suite, monkeypatch):
    monkeypatch.delenv("DOCSCORE_ALLOW_SKIPS", raising=False)
    result = suite.runpytest_subprocess("-q")
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=1)


def test_an_unlisted_skip_fails_the_run_and_is_named(suite, monkeypatch):
    monkeypatch.delenv("DOCSCORE_ALLOW_SKIPS", raising=False)
    suite.makepyfile(test_b="""
import pytest

def test_emulator():
    pytest.skip("Azurite is not installed")
""")
    result = suite.runpytest_subprocess("-q")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*unexpected skips (these fail the run)*", "*test_b.py::test_emulator: *Azurite*"])
    monkeypatch.setenv("DOCSCORE_ALLOW_SKIPS", "1")
    assert suite.runpytest_subprocess("-q").ret == 0
