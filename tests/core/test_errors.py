"""Every error class Harmonica defines derives from app.core.errors.HarmonicaError (one base to catch and log)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import app.core
from app.core.errors import HarmonicaError

# The sandbox kernel runs in the locked-down child and never imports the app, so its exceptions
# cannot share the base. Underscored classes are private control flow, not errors.
OUTSIDE_THE_APP = {
    "app.core.tools.sandbox_kernel.CpuLimitExceeded",
    "app.core.tools.sandbox_kernel.ProtocolError",
}


def _error_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for mod in pkgutil.walk_packages(app.core.__path__, "app.core."):
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.append(obj)
    return found


def test_every_error_class_derives_from_the_one_base() -> None:
    classes = _error_classes()
    names = {f"{c.__module__}.{c.__qualname__}" for c in classes}
    assert {
        "app.core.engine.errors.EngineError",
        "app.core.store.rows.StoreError",
        "app.core.server.errors.ApiError",
    } <= names
    strays = sorted(
        names - OUTSIDE_THE_APP - {f"{c.__module__}.{c.__qualname__}" for c in classes if issubclass(c, HarmonicaError)}
    )
    assert strays == []


def test_errors_that_were_value_errors_still_are() -> None:
    from app.core.export import ImportFormatError
    from app.core.gguf_info import GgufError
    from app.core.llama_ext import LlamaExtError
    from app.core.problem_sets import ProblemError
    from app.core.tools.schema import ArgumentError

    for cls in (ImportFormatError, GgufError, ProblemError, ArgumentError):
        assert issubclass(cls, ValueError) and issubclass(cls, HarmonicaError)
    assert issubclass(LlamaExtError, RuntimeError)
