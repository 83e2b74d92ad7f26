"""A three-step flow the load test submits while wrk reads the API and the pages."""

from flowsite import FlowSpec, step


class LoadFlow(FlowSpec):
    @step
    def start(self):
        self.numbers = list(range(100))
        self.next(self.total)

    @step
    def total(self):
        self.sum = sum(self.numbers)
        print(f"sum {self.sum}")
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    LoadFlow()
