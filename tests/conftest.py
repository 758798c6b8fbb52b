"""Session-wide hooks for the whole test tree."""

import os
import sys

import pytest

_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Ends the process with pytest's status once everything pytest prints is out.

    The tests load native libraries that keep threads of their own (Ray's core worker,
    OpenCV's and torch's pools, dlib): one of them now and then crashes in C++ static
    destructors after Python has finalised (a segmentation fault after the summary, with
    no Python stack), turning a green run red. The results are known and reported by then,
    so the process leaves without running those destructors.
    """
    if _EXIT_STATUS in config.stash:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[_EXIT_STATUS])
