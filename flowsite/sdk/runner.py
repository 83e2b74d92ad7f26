"""Run one step of a flow in this process: `python -m flowsite.sdk.runner SPEC.json`.

The worker prepares the code, the input artifacts as local pickle files, and a spec;
this process runs the step and writes its new artifacts and a result file. It never
talks to the database: the worker records everything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import sys
import traceback
from typing import Any

from flowsite.sdk.current import current
from flowsite.sdk.flowspec import FlowSpec, Parameter

PREVIEW_CHARS = 300


def load_pickle(path: str) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)


class InputView:
    """One input of a join: the artifacts of one branch's last task."""

    def __init__(self, step: str, refs: dict):
        self._step = step
        self._refs = refs
        self._cache: dict = {}

    def _names(self) -> list[str]:
        return list(self._refs)

    def _sha(self, name: str) -> str:
        return self._refs[name]["sha256"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._refs:
            raise AttributeError(f"input from step '{self._step}' has no artifact '{name}'")
        if name not in self._cache:
            self._cache[name] = load_pickle(self._refs[name]["path"])
        return self._cache[name]

    def __repr__(self) -> str:
        return f"<input from {self._step}>"


class Inputs(list):
    """The inputs of a join, in branch order; `inputs.a` names a static branch by step."""

    def __getattr__(self, name: str) -> InputView:
        for view in self:
            if view._step == name:
                return view
        raise AttributeError(f"no input comes from step '{name}'")


def _load_module(code_dir: str, flow_file: str):
    sys.path.insert(0, code_dir)
    path = os.path.join(code_dir, flow_file)
    spec = importlib.util.spec_from_file_location("flowsite_user_flow", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["flowsite_user_flow"] = module
    spec.loader.exec_module(module)
    return module


def _find_flow_class(module, flow_name: str) -> type:
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, FlowSpec) and value is not FlowSpec:
            if value.__name__ == flow_name:
                return value
    raise RuntimeError(f"class {flow_name} not found in the code package")


def _preview(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the step
        text = f"<repr failed: {type(exc).__name__}>"
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 3] + "..."
    return text


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _save_artifacts(flow: FlowSpec, output_dir: str, parameter_names: set) -> dict:
    """Pickle every public attribute set or read in this step; keep the rest by reference."""
    saved = {}
    refs = flow.__dict__.get("_artifact_refs", {})
    for name, value in list(flow.__dict__.items()):
        if name.startswith("_"):
            continue
        if name in refs and name not in parameter_names:
            # Read but perhaps changed in place: store it again; the hash dedups it.
            pass
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ArtifactPickleError(
                f"artifact '{name}' of type {_type_name(value)} cannot be pickled: {exc}. "
                f"Store a picklable value in self.{name}, or keep it in a local "
                "variable instead of an attribute."
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(output_dir, f"{digest}.pkl")
        with open(path, "wb") as handle:
            handle.write(data)
        saved[name] = {
            "path": path,
            "sha256": digest,
            "size": len(data),
            "type": _type_name(value),
            "preview": _preview(value),
        }
    for name, ref in refs.items():
        if name not in saved:
            saved[name] = {"sha256": ref["sha256"], "inherited": True}
    return saved


class ArtifactPickleError(Exception):
    pass


def run(spec: dict) -> dict:
    module = _load_module(spec["code_dir"], spec["flow_file"])
    cls = _find_flow_class(module, spec["flow_name"])
    step_name = spec["step"]
    step_func = cls._steps().get(step_name)
    if step_func is None:
        raise RuntimeError(f"step {step_name} not found in class {cls.__name__}")

    flow = cls(use_cli=False)
    params = spec.get("parameters", {})
    parameter_names = set(params)
    for name, value in params.items():
        flow.__dict__[name] = value

    inputs = spec.get("inputs", [])
    is_join = spec.get("join", False)
    if not is_join and inputs:
        flow.__dict__["_artifact_refs"] = {
            name: ref for name, ref in inputs[0]["artifacts"].items()
            if name not in parameter_names
        }
    foreach = spec.get("foreach")
    if foreach:
        flow.__dict__["_index"] = foreach["index"]

        def load_input(foreach=foreach):
            return load_pickle(foreach["path"])[foreach["index"]]

        flow.__dict__["_input_loader"] = load_input

    values = dict(spec["current"])
    current._set(values)
    client = spec.get("client") or {}
    if client.get("url"):
        os.environ["FLOWSITE_URL"] = client["url"]
    if client.get("token"):
        os.environ["FLOWSITE_TOKEN"] = client["token"]
    from flowsite.sdk import client as client_api

    # An empty namespace from `run --namespace ''` means global, so it must not fall back.
    client_api.namespace(client.get("namespace", values.get("namespace")))

    if is_join:
        views = Inputs(InputView(item["step"], item["artifacts"]) for item in inputs)
        step_func(flow, views)
    else:
        step_func(flow)

    transition = flow._transition
    expected = spec.get("expected_next", [])
    if step_name != "end":
        if transition is None:
            raise RuntimeError(
                f"step '{step_name}' finished without calling self.next(); "
                f"call self.next(self.{expected[0] if expected else 'end'})"
            )
        if transition["next"] != expected:
            raise RuntimeError(
                f"step '{step_name}' called self.next({', '.join(transition['next'])}) "
                f"but the flow graph says {', '.join(expected)}. self.next() must be "
                "the same on every run; branch with foreach or static splits instead."
            )

    foreach_count = None
    if transition and transition.get("foreach"):
        name = transition["foreach"]
        try:
            items = getattr(flow, name)
        except AttributeError:
            raise RuntimeError(
                f"foreach='{name}' names no artifact; set self.{name} to a list first"
            ) from None
        try:
            foreach_count = len(items)
        except TypeError:
            raise RuntimeError(
                f"foreach artifact '{name}' has no length; make it a list or tuple"
            ) from None
        if foreach_count == 0:
            raise RuntimeError(f"foreach artifact '{name}' is empty; nothing to run")
        flow.__dict__[name] = items

    artifacts = _save_artifacts(flow, spec["output_dir"], parameter_names)
    return {
        "ok": True,
        "artifacts": artifacts,
        "foreach_count": foreach_count,
        "foreach_name": transition.get("foreach") if transition else None,
        "next": transition["next"] if transition else [],
    }


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        spec = json.load(handle)
    result_path = os.path.join(spec["output_dir"], "result.json")
    try:
        result = run(spec)
        code = 0
    except ArtifactPickleError as exc:
        print(str(exc), file=sys.stderr)
        result = {"ok": False, "error": str(exc)}
        code = 1
    except BaseException as exc:  # the step's own error, shown as a traceback
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    with open(result_path + ".tmp", "w") as handle:
        json.dump(result, handle)
    os.replace(result_path + ".tmp", result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
