"""A foreach that fans out to one task per item and collects the results in a join.

    python examples/foreach_flow.py run --count 20
"""

from flowsite import FlowSpec, Parameter, step


class ForeachFlow(FlowSpec):
    """Square the numbers 0 .. count-1 in parallel tasks and add them up."""

    count = Parameter("count", default=10, help="Number of foreach tasks to start.")

    @step
    def start(self):
        """Make the list that the foreach iterates over."""
        if self.count < 1:
            raise ValueError(f"--count must be at least 1, not {self.count}")
        self.numbers = list(range(self.count))
        self.next(self.square, foreach="numbers")

    @step
    def square(self):
        """Runs once per number: self.input is the item, self.index its position."""
        self.value = self.input * self.input
        print("item %d: %d squared is %d" % (self.index, self.input, self.value))
        self.next(self.join)

    @step
    def join(self, inputs):
        """Collect the squares; inputs are in item order."""
        self.squares = [task.value for task in inputs]
        self.total = sum(self.squares)
        self.next(self.end)

    @step
    def end(self):
        print("sum of squares: %d" % self.total)


if __name__ == "__main__":
    ForeachFlow()
