# The document imports only Flow here; namespace is added so the name exists.
from flowsite import Flow, namespace
namespace('xyz_features')
run = Flow('FeatureFlow').latest_run
