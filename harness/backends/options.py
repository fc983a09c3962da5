"""Backend options: the one parser of what a backend's constructor is given, and its one error.

Options arrive as strings from ``backend_options`` in ``fixtures/chips.toml`` (and as typed values
from code and tests); every backend reads them through an :class:`OptionReader` bound to its
name, so the same mistake reads the same on every backend::

    onnxruntime backend option threads: expected an integer >= 1, found '0'
    openvino backend option threads: expected an integer >= 1, found '0'

An option name the backend does not take is refused by :meth:`OptionReader.check_names` (called
by ``harness.backends.base.get_backend``), listing the names it takes. Every refusal is a
:class:`BackendOptionError`: a :class:`~harness.errors.UsageError` (exit 4 at start-up, a failure
without traceback inside a test) and a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from harness.errors import UsageError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class BackendOptionError(UsageError, ValueError):
    """A backend option is malformed or unknown; the message names the backend and the option, what
    was expected and what was found."""


@dataclass(frozen=True)
class OptionReader:
    """Typed readers of one backend's options; each refuses a bad value with :class:`BackendOptionError`."""

    backend: str

    def error(self, name: str, detail: str) -> BackendOptionError:
        """``<backend> backend option <name>: <detail>``, for checks a backend makes itself."""
        return BackendOptionError(f"{self.backend} backend option {name}: {detail}")

    def invalid(self, name: str, expected: str, found: object) -> BackendOptionError:
        """``<backend> backend option <name>: expected <expected>, found <found>``."""
        return self.error(name, f"expected {expected}, found {found!r}")

    def check_names(self, given: Collection[str], accepted: Collection[str]) -> None:
        """Refuse option names the backend does not take, listing the ones it does."""
        unknown = [name for name in given if name not in accepted]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise BackendOptionError(
                f"{self.backend} backend option{plural} {', '.join(unknown)}: unknown option name{plural}; "
                f"expected one of {', '.join(sorted(accepted))} (backend_options in fixtures/chips.toml)"
            )

    def flag(self, name: str, value: bool | str) -> bool:
        """A boolean: a bool, or one of ``1 true yes on`` / ``0 false no off`` in any case."""
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise self.invalid(name, "true or false", value)

    def integer(self, name: str, value: int | str | None, minimum: int) -> int | None:
        """An integer ``>= minimum``; None (or an empty string) stays None: the backend's default."""
        if value is None or value == "":
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self.invalid(name, f"an integer >= {minimum}", value) from None
        if number < minimum:
            raise self.invalid(name, f"an integer >= {minimum}", value)
        return number

    def number(self, name: str, value: float | str, minimum: float) -> float:
        """A real number ``>= minimum`` (e.g. seconds)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.invalid(name, f"a number >= {minimum:g}", value) from None
        if not number >= minimum:  # also refuses nan
            raise self.invalid(name, f"a number >= {minimum:g}", value)
        return number

    def choice(self, name: str, value: str, choices: Sequence[str]) -> str:
        """One of ``choices``, matched in any case; returned as ``choices`` spells it."""
        by_key = {c.lower(): c for c in choices}
        found = by_key.get(str(value).strip().lower())
        if found is None:
            raise self.invalid(name, f"one of {', '.join(choices)}", value)
        return found

    def names(
        self, name: str, value: str | Sequence[str] | None, item: str = "name",
        allowed: Collection[str] | None = None,
    ) -> tuple[str, ...]:
        """A comma-separated list (or a sequence) of distinct names, blanks dropped; ``()`` for None.

        With ``allowed``, every name must be one of them.
        """
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)
        found = tuple(str(p).strip() for p in items if str(p).strip())
        if allowed is not None:
            unknown = [p for p in found if p not in allowed]
            if unknown:
                raise self.error(
                    name, f"unknown {item}(s) {', '.join(unknown)}; expected comma-separated names from: "
                    f"{', '.join(allowed)}"
                )
        if len(set(found)) != len(found):
            raise self.error(name, f"{','.join(found)} names a {item} twice")
        return found

    def sections(
        self, name: str, value: str | Mapping[str, Mapping[str, object]] | None, section: str = "Section"
    ) -> dict[str, dict[str, str]]:
        """Per-section ``key=value`` options, as a mapping or as one string.

        The string form is ``Section:key=value,key=value;Section:key=value`` (``section`` names
        what a section is in the messages, e.g. ``Provider``). Values stay strings.
        """
        if value is None or value == "":
            return {}
        if not isinstance(value, str):
            return {str(s): {str(k): str(v) for k, v in opts.items()} for s, opts in value.items()}
        out: dict[str, dict[str, str]] = {}
        for part in value.split(";"):
            part = part.strip()
            if not part:
                continue
            head, sep, pairs = part.partition(":")
            if not sep or not head.strip():
                raise self.error(
                    name, f"expected '{section}:key=value,...' parts separated by ';', found {part!r}"
                )
            opts = out.setdefault(head.strip(), {})
            for pair in pairs.split(","):
                key, eq, val = pair.partition("=")
                if not eq or not key.strip():
                    raise self.error(name, f"expected key=value in {part!r}, found {pair!r}")
                opts[key.strip()] = val.strip()
        return out
