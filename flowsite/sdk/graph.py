"""Parse a flow's graph from its source without running it, and validate it.

The same code runs in the CLI, before anything is sent, and on the server, which
never trusts a graph it did not parse itself.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

STEP_DECORATORS = ("retry", "timeout", "resources", "catch")


class FlowGraphError(ValueError):
    """The flow file does not define a valid graph."""

    def __init__(self, message: str, *, file: str = "", line: int = 0, fix: str = ""):
        self.message = message
        self.file = file
        self.line = line
        self.fix = fix
        where = f"{file}:{line}: " if file else ""
        text = f"{where}{message}"
        if fix:
            # The message has no final period of its own, so add one before the fix.
            separator = " " if text.endswith((".", ":", "?", "!")) else ". "
            text += f"{separator}{fix}"
        super().__init__(text)


@dataclass
class _Step:
    name: str
    line: int
    next: list[str]
    next_line: int
    foreach: str | None
    join: bool
    decorators: dict
    doc: str


def _literal(node: ast.AST, file: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise FlowGraphError(
            "decorator arguments must be literal values",
            file=file,
            line=getattr(node, "lineno", 0),
            fix="Write numbers, strings or booleans directly in the decorator.",
        ) from None


def _decorator_name(node: ast.AST) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def _decorator_args(node: ast.AST, file: str) -> dict:
    if not isinstance(node, ast.Call):
        return {}
    if node.args:
        raise FlowGraphError(
            f"@{_decorator_name(node)} takes keyword arguments only",
            file=file,
            line=node.lineno,
            fix="Write for example @retry(times=2).",
        )
    return {kw.arg: _literal(kw.value, file) for kw in node.keywords if kw.arg}


RESOURCE_KEYS = ("cpu", "gpu", "memory", "queue")
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _check_resources(args: dict, step: str, file: str, line: int) -> None:
    """Reject @resources arguments that a worker could not route or apply."""
    for key, value in args.items():
        if key not in RESOURCE_KEYS:
            raise FlowGraphError(
                f"@resources on step '{step}' has an unknown argument {key!r}",
                file=file, line=line,
                fix=f"Use only {', '.join(RESOURCE_KEYS)}.",
            )
        if key == "queue":
            if not isinstance(value, str) or not QUEUE_NAME.fullmatch(value):
                raise FlowGraphError(
                    f"@resources(queue={value!r}) on step '{step}' is not a valid queue name",
                    file=file, line=line,
                    fix="Use 1 to 100 letters, digits, '_', '.' or '-', for example queue='gpu'.",
                )
            continue
        # cpu may be fractional (0.5); memory is in megabytes and gpu a device count.
        valid = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if valid and key != "cpu":
            valid = isinstance(value, int)
        if not valid:
            kind = "a positive number" if key == "cpu" else "a positive integer"
            raise FlowGraphError(
                f"@resources({key}={value!r}) on step '{step}' must be {kind}",
                file=file, line=line,
                fix="Write for example @resources(cpu=2, memory=4096) with memory in MB.",
            )


def _is_flowspec_class(node: ast.ClassDef) -> bool:
    for base in node.bases:
        name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
        if name == "FlowSpec":
            return True
    return False


def _find_next_calls(func: ast.FunctionDef) -> list[ast.Call]:
    calls = []
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "next"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
        ):
            calls.append(node)
    return calls


def _parse_step(func: ast.FunctionDef, file: str) -> _Step:
    decorators = {}
    for deco in func.decorator_list:
        name = _decorator_name(deco)
        if name in STEP_DECORATORS:
            decorators[name] = _decorator_args(deco, file)
    if "resources" in decorators:
        _check_resources(decorators["resources"], func.name, file, func.lineno)
    arg_count = len(func.args.args)
    if arg_count not in (1, 2):
        raise FlowGraphError(
            f"step '{func.name}' takes {arg_count} arguments",
            file=file,
            line=func.lineno,
            fix="A step takes (self), or (self, inputs) when it is a join.",
        )
    calls = _find_next_calls(func)
    if len(calls) > 1:
        raise FlowGraphError(
            f"step '{func.name}' calls self.next() {len(calls)} times",
            file=file,
            line=calls[1].lineno,
            fix="Call self.next() exactly once, as the last statement of the step.",
        )
    targets: list[str] = []
    foreach = None
    next_line = func.lineno
    if calls:
        call = calls[0]
        next_line = call.lineno
        for arg in call.args:
            if not (
                isinstance(arg, ast.Attribute)
                and isinstance(arg.value, ast.Name)
                and arg.value.id == "self"
            ):
                raise FlowGraphError(
                    f"step '{func.name}' passes something other than self.<step> to "
                    "self.next()",
                    file=file,
                    line=call.lineno,
                    fix="Name each following step as self.step_name.",
                )
            targets.append(arg.attr)
        for kw in call.keywords:
            if kw.arg == "foreach":
                if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
                    raise FlowGraphError(
                        f"step '{func.name}' gives foreach a value that is not a string",
                        file=file,
                        line=call.lineno,
                        fix="Pass the artifact name as a string: foreach='items'.",
                    )
                foreach = kw.value.value
            else:
                raise FlowGraphError(
                    f"self.next() in step '{func.name}' got an unknown argument "
                    f"'{kw.arg}'",
                    file=file,
                    line=call.lineno,
                    fix="The only keyword argument of self.next() is foreach.",
                )
        if not targets:
            raise FlowGraphError(
                f"self.next() in step '{func.name}' names no step",
                file=file,
                line=call.lineno,
                fix="Pass the following step, for example self.next(self.end).",
            )
        if foreach is not None and len(targets) != 1:
            raise FlowGraphError(
                f"step '{func.name}' uses foreach with {len(targets)} following steps",
                file=file,
                line=call.lineno,
                fix="A foreach fans out to exactly one step.",
            )
    return _Step(
        name=func.name,
        line=func.lineno,
        next=targets,
        next_line=next_line,
        foreach=foreach,
        join=arg_count == 2,
        decorators=decorators,
        doc=(ast.get_docstring(func) or "").strip(),
    )


def _class_decorators(node: ast.ClassDef, file: str) -> dict:
    result = {}
    for deco in node.decorator_list:
        name = _decorator_name(deco)
        if name in ("schedule", "project"):
            result[name] = _decorator_args(deco, file)
    return result


def parse_source(source: str, file: str = "flow.py", class_name: str | None = None) -> dict:
    """Return the graph of the FlowSpec class in `source` as a JSON-ready dict."""
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:
        raise FlowGraphError(
            f"syntax error: {exc.msg}", file=file, line=exc.lineno or 0,
            fix="Fix the Python syntax and run again.",
        ) from None

    classes = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and _is_flowspec_class(node)
    ]
    if class_name:
        classes = [node for node in classes if node.name == class_name]
    if not classes:
        raise FlowGraphError(
            "no FlowSpec subclass found",
            file=file,
            line=1,
            fix="Define a class that inherits from FlowSpec at the top level of the file.",
        )
    if len(classes) > 1:
        names = ", ".join(node.name for node in classes)
        raise FlowGraphError(
            f"more than one FlowSpec subclass found ({names})",
            file=file,
            line=classes[1].lineno,
            fix="Keep one flow per file.",
        )
    cls = classes[0]

    steps: dict[str, _Step] = {}
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        if any(_decorator_name(deco) == "step" for deco in node.decorator_list):
            steps[node.name] = _parse_step(node, file)

    graph = {
        "flow": cls.name,
        "file": file,
        "line": cls.lineno,
        "doc": (ast.get_docstring(cls) or "").strip(),
        "order": list(steps),
        "steps": {
            name: {
                "line": s.line,
                "next": s.next,
                "foreach": s.foreach,
                "join": s.join,
                "decorators": s.decorators,
                "doc": s.doc,
            }
            for name, s in steps.items()
        },
        "class_decorators": _class_decorators(cls, file),
    }
    validate(graph, steps_lines={n: (s.line, s.next_line) for n, s in steps.items()})
    annotate(graph)
    return graph


def validate(graph: dict, steps_lines: dict | None = None) -> None:
    """Raise FlowGraphError unless the graph can run from start to end."""
    file = graph.get("file", "")
    steps = graph["steps"]
    lines = steps_lines or {n: (s.get("line", 0), s.get("line", 0)) for n, s in steps.items()}

    if "start" not in steps:
        raise FlowGraphError(
            "the flow has no 'start' step",
            file=file, line=graph.get("line", 0),
            fix="Add a method named start decorated with @step.",
        )
    if "end" not in steps:
        raise FlowGraphError(
            "the flow has no 'end' step",
            file=file, line=graph.get("line", 0),
            fix="Add a method named end decorated with @step; it ends the flow.",
        )
    if steps["start"]["join"]:
        raise FlowGraphError(
            "the start step cannot be a join", file=file, line=lines["start"][0],
            fix="Define start(self) with no inputs argument.",
        )
    for name, spec in steps.items():
        if name == "end":
            if spec["next"]:
                raise FlowGraphError(
                    "the end step calls self.next()", file=file, line=lines[name][1],
                    fix="Remove the call: end is the last step.",
                )
            continue
        if not spec["next"]:
            raise FlowGraphError(
                f"step '{name}' does not call self.next()", file=file, line=lines[name][0],
                fix="End the step with self.next(self.<following step>).",
            )
        for target in spec["next"]:
            if target not in steps:
                known = ", ".join(sorted(steps))
                raise FlowGraphError(
                    f"step '{name}' goes to unknown step '{target}'",
                    file=file, line=lines[name][1],
                    fix=f"Use one of: {known}; or define {target} with @step.",
                )
            if target == "start":
                raise FlowGraphError(
                    f"step '{name}' goes back to start", file=file, line=lines[name][1],
                    fix="Flows cannot loop; go forward to another step.",
                )

    # Walk from start and track the open splits. Every step must be reached with one
    # split stack, and each join must close the split that is open.
    stacks: dict[str, tuple] = {"start": ()}
    queue = ["start"]
    while queue:
        name = queue.pop(0)
        spec = steps[name]
        stack = stacks[name]
        targets = spec["next"]
        if spec["foreach"] or len(targets) > 1:
            kind = "foreach" if spec["foreach"] else "branch"
            out_stack = stack + ((name, kind),)
        else:
            out_stack = stack
        for target in targets:
            target_stack = out_stack
            if steps[target]["join"]:
                if not out_stack:
                    raise FlowGraphError(
                        f"step '{target}' is a join but no split comes before it",
                        file=file, line=lines[target][0],
                        fix="Remove the inputs argument, or split before it with "
                        "self.next(self.a, self.b) or foreach=.",
                    )
                if len(targets) > 1 or spec["foreach"]:
                    raise FlowGraphError(
                        f"step '{name}' splits straight into the join '{target}'",
                        file=file, line=lines[name][1],
                        fix="Put at least one step between a split and its join.",
                    )
                target_stack = out_stack[:-1]
            if target in stacks:
                if stacks[target] != target_stack:
                    raise FlowGraphError(
                        f"step '{target}' is reached from different branches without a join",
                        file=file, line=lines[target][0],
                        fix="Join the branches first: a join step takes (self, inputs).",
                    )
                continue
            stacks[target] = target_stack
            queue.append(target)

    for name in steps:
        if name not in stacks:
            raise FlowGraphError(
                f"step '{name}' cannot be reached from start",
                file=file, line=lines[name][0],
                fix="Call self.next(self.%s) from another step, or remove it." % name,
            )
    if stacks["end"]:
        split = stacks["end"][-1][0]
        raise FlowGraphError(
            f"the split in step '{split}' has no join before end",
            file=file, line=lines[split][1],
            fix="Add a join step, def join(self, inputs), where the branches meet.",
        )
    # Branches of one split must meet in the same join.
    for name, spec in steps.items():
        if spec["join"]:
            sources = [n for n, s in steps.items() if name in s["next"]]
            splits = {stacks[n][-1] if stacks[n] else None for n in sources}
            if len(splits) > 1:
                raise FlowGraphError(
                    f"join '{name}' closes more than one split",
                    file=file, line=lines[name][0],
                    fix="Give each split its own join.",
                )


def annotate(graph: dict) -> None:
    """Add the type of each step: start, linear, split, foreach, join or end."""
    for name, spec in graph["steps"].items():
        if name == "end":
            kind = "end"
        elif spec["join"]:
            kind = "join"
        elif spec["foreach"]:
            kind = "foreach"
        elif len(spec["next"]) > 1:
            kind = "split"
        elif name == "start":
            kind = "start"
        else:
            kind = "linear"
        spec["type"] = kind


def parse_file(path: str, class_name: str | None = None) -> dict:
    import os

    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    return parse_source(source, os.path.basename(path), class_name)
