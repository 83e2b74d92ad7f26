# The document imports only Flow and namespace here; Run is added so the name exists.
from flowsite import Flow, namespace, Run

namespace('user:will')
run = Run('PredictionFlow/5')
