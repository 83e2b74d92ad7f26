from flowsite import Flow
run = list(Flow('HelloFlow').runs('crazy_test', 'date:20180301'))[0]
