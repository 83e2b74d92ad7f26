from flowsite import Flow

run = Flow('PredictionFlow').latest_run
