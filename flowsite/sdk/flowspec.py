"""The flow author's API: FlowSpec, @step, Parameter and the step decorators."""

from __future__ import annotations

import json
from typing import Any, Callable

_RESERVED = {"next", "input", "index", "foreach_stack", "merge_artifacts"}


def step(func: Callable) -> Callable:
    """Mark a FlowSpec method as a step."""
    func.is_step = True
    return func


def _step_decorator(name: str):
    def decorator(func=None, **kwargs):
        def apply(f):
            f.__dict__.setdefault("step_decorators", {})[name] = kwargs
            return f

        if func is not None and callable(func):
            return apply(func)
        return apply

    decorator.__name__ = name
    return decorator


retry = _step_decorator("retry")
timeout = _step_decorator("timeout")
resources = _step_decorator("resources")
catch = _step_decorator("catch")


def schedule(cls=None, **kwargs):
    """Schedule a deployed flow: @schedule(cron='*/5 * * * *'), hourly=True or daily=True."""

    def apply(c):
        c._schedule = kwargs
        return c

    if cls is not None and isinstance(cls, type):
        return apply(cls)
    return apply


class Parameter:
    """A run parameter, given on the command line as --name value."""

    _TYPES = {"str": str, "int": int, "float": float, "bool": bool, "json": "json"}

    def __init__(
        self,
        name: str,
        default: Any = None,
        type: Any = None,  # noqa: A002 - mirrors the Metaflow signature
        help: str = "",  # noqa: A002
        required: bool = False,
    ):
        if not name.isidentifier():
            raise ValueError(
                f"Parameter name {name!r} is not a Python identifier; use letters, "
                "digits and underscores."
            )
        self.name = name
        self.default = default
        if type is None:
            type = builtin_type(default) if default is not None else str
        self.type = type
        self.help = help
        self.required = required

    @property
    def type_name(self) -> str:
        if self.type == "json" or self.type is JSONType:
            return "json"
        return getattr(self.type, "__name__", str(self.type))

    def convert(self, raw: str) -> Any:
        """Convert a command-line string to the parameter's type, or raise ValueError."""
        kind = self.type_name
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{raw!r} is not a boolean (use true or false)")
        if kind == "json":
            return json.loads(raw)
        if kind in ("int", "float", "str"):
            return {"int": int, "float": float, "str": str}[kind](raw)
        return self.type(raw)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "type": self.type_name,
            "default": self.default,
            "help": self.help,
            "required": self.required,
        }


class JSONType:
    """Marker type: the parameter value is parsed as JSON."""


def builtin_type(value: Any):
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind
    return "json"


class FlowSpec:
    """Base class of a flow. Instantiating it in __main__ runs the command line."""

    def __init__(self, use_cli: bool = True):
        self._transition: dict | None = None
        self._artifact_refs: dict = {}
        self._accessed: set = set()
        if use_cli:
            from flowsite.sdk.cli import main

            main(type(self))

    @classmethod
    def _parameters(cls) -> list[Parameter]:
        found = []
        for attr in dir(cls):
            value = getattr(cls, attr, None)
            if isinstance(value, Parameter):
                found.append(value)
        return found

    @classmethod
    def _steps(cls) -> dict[str, Callable]:
        return {
            name: func
            for name, func in vars(cls).items()
            if callable(func) and getattr(func, "is_step", False)
        }

    @property
    def index(self) -> int | None:
        return self.__dict__.get("_index")

    @property
    def input(self) -> Any:
        if "_input_loader" not in self.__dict__:
            raise AttributeError("self.input is only set inside a foreach")
        return self.__dict__["_input_loader"]()

    def next(self, *steps: Callable, foreach: str | None = None) -> None:
        """Declare the step or steps that follow this one."""
        if self._transition is not None:
            raise RuntimeError("self.next() was called twice in one step")
        names = []
        for target in steps:
            name = getattr(target, "__name__", None)
            if name is None or not getattr(target, "is_step", False):
                raise TypeError("self.next() takes steps, such as self.end")
            names.append(name)
        self._transition = {"next": names, "foreach": foreach}

    def merge_artifacts(self, inputs, exclude: list[str] | None = None, include=None):
        """Copy artifacts from the join's inputs that agree, or exist in one input only."""
        exclude = set(exclude or [])
        seen: dict[str, Any] = {}
        conflicts = set()
        for branch in inputs:
            for name in branch._names():
                if name in exclude or (include and name not in include):
                    continue
                if name in self.__dict__:
                    continue
                value = getattr(branch, name)
                if name in seen:
                    if branch._sha(name) != seen[name][1]:
                        conflicts.add(name)
                else:
                    seen[name] = (value, branch._sha(name))
        if conflicts:
            names = ", ".join(sorted(conflicts))
            raise ValueError(
                f"merge_artifacts: the inputs have different values for {names}. "
                "Set them in the join before calling merge_artifacts, or exclude them."
            )
        for name, (value, _sha) in seen.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: load an inherited artifact lazily.
        refs = self.__dict__.get("_artifact_refs")
        if refs and name in refs:
            from flowsite.sdk.runner import load_pickle

            value = load_pickle(refs[name]["path"])
            self.__dict__[name] = value
            return value
        raise AttributeError(
            f"{type(self).__name__} has no artifact or attribute '{name}'"
        )
