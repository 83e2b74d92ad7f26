# The document's `print task.stdout` is Python 2; print() is the Python 3 form.
from flowsite import Task
task = Task('CurrentFlow/1/start/550539')
print(task.stdout)
