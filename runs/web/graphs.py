"""Server-side layout of the run DAG and the task timeline, drawn as SVG by templates.

The layout only computes coordinates; the templates write the SVG, so every step name
passes through Django's autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_WIDTH = 150
NODE_HEIGHT = 46
COLUMN_GAP = 60
ROW_GAP = 18
MARGIN = 10

GANTT_LABEL_WIDTH = 190
GANTT_WIDTH = 640
GANTT_ROW = 18
# Tasks the timeline draws; the tasks table below the chart lists them all, paged.
GANTT_MAX_TASKS = 300


@dataclass
class Node:
    name: str
    x: int
    y: int
    status: str
    kind: str
    tasks: int
    foreach_count: int | None

    @property
    def cx(self) -> int:
        return self.x + NODE_WIDTH // 2

    @property
    def label_y(self) -> int:
        return self.y + 19

    @property
    def detail_y(self) -> int:
        return self.y + 36


@dataclass
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def path(self) -> str:
        middle = (self.x1 + self.x2) // 2
        return (f"M{self.x1},{self.y1} C{middle},{self.y1} {middle},{self.y2} "
                f"{self.x2},{self.y2}")


def _levels(graph: dict) -> dict[str, int]:
    """Give each step the length of the longest path from start, so joins sit after
    every branch that feeds them."""
    steps = graph.get("steps", {})
    order = graph.get("order", list(steps))
    level = {name: 0 for name in order}
    # The graph is acyclic (validated when the run was created), so len(order) passes
    # settle every level.
    for _ in range(len(order)):
        changed = False
        for name in order:
            for target in steps.get(name, {}).get("next", []):
                if target in level and level[target] < level[name] + 1:
                    level[target] = level[name] + 1
                    changed = True
        if not changed:
            break
    return level


def dag_layout(graph: dict, step_status: dict[str, str], task_counts: dict[str, int],
               foreach_counts: dict[str, int]) -> dict:
    """Place each step in a column by depth; return nodes, edges and the SVG size."""
    steps = graph.get("steps", {})
    order = graph.get("order", list(steps))
    level = _levels(graph)
    columns: dict[int, list[str]] = {}
    for name in order:
        columns.setdefault(level[name], []).append(name)
    tallest = max((len(names) for names in columns.values()), default=1)
    height = MARGIN * 2 + tallest * NODE_HEIGHT + (tallest - 1) * ROW_GAP

    nodes: dict[str, Node] = {}
    for column, names in columns.items():
        column_height = len(names) * NODE_HEIGHT + (len(names) - 1) * ROW_GAP
        top = (height - column_height) // 2
        for row, name in enumerate(names):
            spec = steps.get(name, {})
            nodes[name] = Node(
                name=name,
                x=MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
                y=top + row * (NODE_HEIGHT + ROW_GAP),
                status=step_status.get(name, "pending"),
                kind=spec.get("type", "linear"),
                tasks=task_counts.get(name, 0),
                foreach_count=foreach_counts.get(name) if spec.get("foreach") else None,
            )

    edges = []
    for name in order:
        source = nodes[name]
        for target_name in steps.get(name, {}).get("next", []):
            target = nodes.get(target_name)
            if target is None:
                continue
            edges.append(Edge(source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2,
                              target.x, target.y + NODE_HEIGHT // 2))
    width = MARGIN * 2 + len(columns) * NODE_WIDTH + max(len(columns) - 1, 0) * COLUMN_GAP
    return {"nodes": [nodes[name] for name in order], "edges": edges,
            "width": width, "height": height, "node_width": NODE_WIDTH,
            "node_height": NODE_HEIGHT}


@dataclass
class Bar:
    task_id: int
    label: str
    step_name: str
    status: str
    x: float
    y: int
    width: float
    seconds: float | None

    @property
    def text_y(self) -> int:
        return self.y + 12


def gantt_layout(tasks: list, now) -> dict:
    """Place one bar per started task on a shared time axis from the first start."""
    started = [task for task in tasks if task.started_at]
    if not started:
        return {"bars": [], "width": 0, "height": 0}
    origin = min(task.started_at for task in started)
    end = max((task.finished_at or now) for task in started)
    span = max((end - origin).total_seconds(), 0.001)
    scale = GANTT_WIDTH / span

    bars = []
    for row, task in enumerate(started):
        start_offset = (task.started_at - origin).total_seconds()
        finish = task.finished_at or now
        seconds = (finish - task.started_at).total_seconds()
        label = task.step_name
        if task.foreach_index is not None:
            label = f"{label} [{task.foreach_index}]"
        bars.append(Bar(
            task_id=task.id, label=label, step_name=task.step_name, status=task.status,
            x=round(GANTT_LABEL_WIDTH + start_offset * scale, 1),
            y=row * GANTT_ROW + 4,
            width=round(max(seconds * scale, 2), 1),
            seconds=seconds,
        ))
    ticks = []
    for index in range(5):
        fraction = index / 4
        ticks.append({"x": round(GANTT_LABEL_WIDTH + fraction * GANTT_WIDTH, 1),
                      "label": f"{span * fraction:.1f} s"})
    return {"bars": bars, "width": GANTT_LABEL_WIDTH + GANTT_WIDTH + 40,
            "height": len(started) * GANTT_ROW + 30, "axis_y": len(started) * GANTT_ROW + 8,
            "ticks": ticks, "label_width": GANTT_LABEL_WIDTH, "span": span}
