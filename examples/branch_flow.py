"""Two static branches that meet in a join.

    python examples/branch_flow.py run --greeting Hi
"""

from flowsite import FlowSpec, Parameter, step


class BranchFlow(FlowSpec):
    """Say hello two ways, then collect both sentences in a join."""

    greeting = Parameter("greeting", default="Hello", help="Word each branch starts with.")

    @step
    def start(self):
        """Set an artifact that both branches inherit."""
        self.audience = "world"
        self.next(self.formal, self.casual)

    @step
    def formal(self):
        """Build the formal sentence."""
        self.sentence = f"{self.greeting}, dear {self.audience}."
        self.formal_length = len(self.sentence)
        self.next(self.join)

    @step
    def casual(self):
        """Build the casual sentence."""
        self.sentence = f"{self.greeting.lower()} {self.audience}!"
        self.next(self.join)

    @step
    def join(self, inputs):
        """Read one branch by name, iterate over all of them, and merge the rest."""
        self.formal_sentence = inputs.formal.sentence
        self.sentences = [branch.sentence for branch in inputs]
        # `sentence` differs between the branches, so it is left out of the merge. The
        # other artifacts either agree or exist in one branch only, so they merge cleanly.
        self.merge_artifacts(inputs, exclude=["sentence"])
        self.next(self.end)

    @step
    def end(self):
        """Print what the join collected."""
        for sentence in self.sentences:
            print(sentence)
        print("formal sentence has %d characters" % self.formal_length)


if __name__ == "__main__":
    BranchFlow()
