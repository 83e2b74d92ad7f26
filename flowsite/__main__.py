import sys

from flowsite.sdk.cli import login_main

sys.exit(login_main(sys.argv[1:]))
