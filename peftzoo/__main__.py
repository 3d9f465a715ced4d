import sys

from peftzoo.cli import main

sys.exit(main())
