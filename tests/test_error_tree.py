"""Every exception ssegate defines is in the one tree of ``ssegate.errors``, and its docstring names it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import ssegate
from ssegate import errors
from ssegate.errors import SSEGateError


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(ssegate.__path__, "ssegate."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("ssegate")
            ):
                found[f"{value.__module__}.{name}"] = value
    return found


def test_every_exception_ssegate_defines_is_an_ssegate_error_defined_in_errors() -> None:
    classes = _exception_classes()
    # A private control-flow exception never leaves its module (the client's reconnect signal).
    public = {where: cls for where, cls in classes.items() if not cls.__name__.startswith("_")}
    assert len(public) >= 20
    assert sorted(w for w, cls in public.items() if cls.__module__ != "ssegate.errors") == []
    assert sorted(w for w, cls in public.items() if not issubclass(cls, SSEGateError)) == []


def test_the_tree_in_the_docstring_names_every_error() -> None:
    doc = errors.__doc__ or ""
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, SSEGateError)
    }
    assert sorted(name for name in defined if f" {name}\n" not in doc and f" {name} " not in doc) == []


def test_errors_keep_the_python_bases_callers_catch() -> None:
    # Callers written before the tree caught these as ValueError; they still can.
    assert issubclass(errors.TopicInputError, ValueError)
    assert issubclass(errors.SettingsError, ValueError)
    assert issubclass(errors.AuthConfigError, ValueError)
    assert issubclass(errors.LocalProtocolError, ValueError)
