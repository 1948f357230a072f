import sys

from h100fleet.probes.run import main

sys.exit(main())
