# The document imports only Flow and namespace here; Run is added so the name exists.
from flowsite import Flow, namespace, Run

run = Run('PredictionFlow/5')
