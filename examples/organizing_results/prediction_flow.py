from flowsite import FlowSpec, step


class PredictionFlow(FlowSpec):
    """Predict with the newest features; each user runs their own version."""

    @step
    def start(self):
        self.predictions = [0.1, 0.7, 0.2]
        self.next(self.end)

    @step
    def end(self):
        print("predictions: %s" % self.predictions)


if __name__ == "__main__":
    PredictionFlow()
