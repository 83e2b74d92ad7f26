from flowsite import FlowSpec, step


class HelloFlow(FlowSpec):
    """The flow of the tagging examples: `python helloworld.py run --tag crazy_test`."""

    @step
    def start(self):
        print("HelloFlow is starting.")
        self.next(self.hello)

    @step
    def hello(self):
        print("Hi!")
        self.next(self.end)

    @step
    def end(self):
        print("HelloFlow is all done.")


if __name__ == "__main__":
    HelloFlow()
