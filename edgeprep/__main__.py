import sys

from edgeprep.cli import main

sys.exit(main())
