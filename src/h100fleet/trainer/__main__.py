import sys

from h100fleet.trainer.cli import main

sys.exit(main())
