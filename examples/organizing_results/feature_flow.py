from flowsite import FlowSpec, step


class FeatureFlow(FlowSpec):
    """Build features that anne and will share through the xyz_features tag."""

    @step
    def start(self):
        self.features = {"clicks": 3, "views": 10}
        self.next(self.end)

    @step
    def end(self):
        print("features: %s" % sorted(self.features))


if __name__ == "__main__":
    FeatureFlow()
