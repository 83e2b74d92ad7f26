from flowsite import Flow, namespace

namespace('user:will')
run = Flow('PredictionFlow').latest_run
