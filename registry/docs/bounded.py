"""Rendering an untrusted template (a collection page) bounded in time and memory.

Jinja's sandbox stops a template from reaching Python's internals, not from asking for a
10 GB string or 10^10 loop iterations. Three layers do:

- ``BoundedSandbox`` refuses the amplifying operations up front: ``*`` and ``+`` whose result would
  pass ``MAX_SIZE`` items, ``**`` with a large result, any call or filter given a number above
  ``MAX_SIZE`` (``center(10**9)``, ``indent``, ``wordwrap``...), and ``range`` beyond a budget
  shared by the whole rendering (nested loops multiply, so the budget is on their product);
- ``render_limits`` bounds what slips through: a deadline (SIGALRM, on the main thread) and a
  cap on the address space while rendering (``RLIMIT_AS``: an allocation past it is a MemoryError);
- ``RenderLimitError`` says which limit, and ``template_line`` finds the template line to report.
"""
from __future__ import annotations

import contextlib
import math
import resource
import signal
import threading
from typing import Any, Iterator

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SIZE = 1_000_000  # characters or items a page's expression may produce
MAX_RANGE_TOTAL = 100_000  # range() items over one whole rendering
MAX_POWER_BITS = 4_096  # bits of an integer a ** may produce
# Callables (str methods, filters) whose number arguments set the size of what they make.
SIZED_BY_ARGUMENT = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap", "truncate",
                               "batch", "slice", "replace"})
RENDER_SECONDS = 10.0
RENDER_EXTRA_BYTES = 512 << 20  # address space a rendering may add


class RenderLimitError(jinja2.exceptions.SecurityError):
    """A collection page asked for more time, memory or output than a page may take."""


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with caps on every operation that can amplify its input."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.range_left = MAX_RANGE_TOTAL
        self.globals["range"] = self._range
        self.filters = {name: self._bounded(name, f) for name, f in self.filters.items()}

    def _range(self, *args: int) -> range:
        rng = range(*args)
        self.range_left -= len(rng)
        if self.range_left < 0:
            raise RenderLimitError(f"range() asked for more than {MAX_RANGE_TOTAL:,} items in all; "
                                   "a collection page may loop only that much")
        return rng

    def _check_args(self, name: str, args: tuple, kwargs: dict) -> None:
        if name not in SIZED_BY_ARGUMENT:
            return
        for value in (*args, *kwargs.values()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
                raise RenderLimitError(f"{name}() given {value!r}; arguments above {MAX_SIZE:,} are refused "
                                       "in a collection page")

    def _bounded(self, name: str, function: Any) -> Any:
        sandbox = self

        def bounded(*args: Any, **kwargs: Any) -> Any:
            sandbox._check_args(name, args[1:], kwargs)
            return sandbox._check_result(function(*args, **kwargs))

        for attr in ("jinja_pass_arg",):  # pass_context / pass_environment markers must survive
            if hasattr(function, attr):
                setattr(bounded, attr, getattr(function, attr))
        bounded.__name__ = name
        return bounded

    @staticmethod
    def _check_result(value: Any) -> Any:
        size = _size(value)
        if size is not None and size > MAX_SIZE:
            raise RenderLimitError(f"an expression produced {size:,} items; a collection page may produce "
                                   f"at most {MAX_SIZE:,} per expression")
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                size = _size(seq)
                if size is not None and isinstance(count, int) and size * count > MAX_SIZE:
                    raise RenderLimitError(f"repetition too large: it would make {size * count:,} items; a collection page "
                                           f"may make at most {MAX_SIZE:,}")
        elif operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            bits = math.log2(abs(left)) * right if abs(left) > 1 and right > 0 else 0
            if bits > MAX_POWER_BITS:
                raise RenderLimitError(f"{left!r} ** {right!r} is too large for a collection page")
        elif operator == "+":
            sizes = (_size(left), _size(right))
            if None not in sizes and sizes[0] + sizes[1] > MAX_SIZE:
                raise RenderLimitError(f"concatenation would make {sizes[0] + sizes[1]:,} items; a collection "
                                       f"page may make at most {MAX_SIZE:,}")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        __self._check_args(getattr(__obj, "__name__", "call"), args, kwargs)
        return __self._check_result(super().call(__context, __obj, *args, **kwargs))


@contextlib.contextmanager
def render_limits(seconds: float | None = None, extra_bytes: int | None = None) -> Iterator[None]:
    """Raise RenderLimitError after ``seconds``, MemoryError past ``extra_bytes`` more address space.

    The deadline needs SIGALRM on the main thread; elsewhere (or on a platform without it) only the
    operation caps of BoundedSandbox apply.
    """
    seconds = RENDER_SECONDS if seconds is None else seconds
    extra_bytes = RENDER_EXTRA_BYTES if extra_bytes is None else extra_bytes
    on_main = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    old_handler = old_limit = None
    if on_main:
        def expire(signum, frame):
            raise RenderLimitError(f"rendering took more than {seconds:g} s; a collection page must render faster")

        old_handler = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        old_limit = resource.getrlimit(resource.RLIMIT_AS)
        used = _address_space()
        if used is not None:
            cap = used + extra_bytes
            if old_limit[1] == resource.RLIM_INFINITY or cap < old_limit[1]:
                resource.setrlimit(resource.RLIMIT_AS, (cap, old_limit[1]))
            else:
                old_limit = None
        else:
            old_limit = None
    except (ValueError, OSError):
        old_limit = None
    try:
        yield
    finally:
        if old_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, old_limit)
        if on_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def template_line(exc: BaseException) -> int | None:
    """The line of the sandboxed template where ``exc`` was raised (Jinja rewrites tracebacks to show it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return getattr(exc, "lineno", None) or line
