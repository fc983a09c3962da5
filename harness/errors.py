"""The harness's exceptions: one base class, three meanings a test run understands.

Every exception class of the harness derives from :class:`HarnessError` (and from a built-in
where callers rely on one, e.g. ``ValueError``). What a test run does with one is decided in one
place, :mod:`harness.pytest.outcomes`, by these classes alone:

- :class:`NotApplicable`: this cannot be certified *here* (an SDK, a device, a CPU feature,
  checkpoints or data are absent). A skip whose reason says what to install or pass.
- :class:`NotCertified`: it ran and the model did not earn the certificate (a gate failed, the
  timed runs did not compute). A failure whose message is the verdict, without a traceback.
- :class:`UsageError`: the command line or a fixtures/ file asks for something impossible. At
  start-up a pytest usage error (exit 4); inside a test a failure with the message only.
- :class:`NotReady`: the hardware is here but not in a state to be measured (a busy or unhealthy
  device). A failure with the message only: never a skip, or a nightly on a busy machine would
  turn green without measuring anything.
- any other :class:`HarnessError`: the harness or a tool broke (an inference error, a corrupt
  cache entry, a tool that crashed). A failure with the message first and the traceback kept.

Messages say what was expected, what was found, and the command or option that fixes it.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every exception the harness raises on purpose."""


class NotApplicable(HarnessError):
    """Cannot run here; the message says what is missing and how to get it (a skip)."""

    def reason(self) -> str:
        """The skip reason: one line a run summary can group by (default: the message)."""
        return str(self)


class NotCertified(HarnessError):
    """Ran, and the certification failed; the message is the verdict (a failure, no traceback)."""


class UsageError(HarnessError):
    """The user's options or fixtures/ data ask for something impossible (a usage error)."""


class NotReady(HarnessError):
    """The device exists but cannot be measured now (busy, unhealthy); a failure, no traceback."""
