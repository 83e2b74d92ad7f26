from flowsite import Flow
run = list(Flow('HelloFlow').runs('crazy_test'))[0]
