import sys

from maxtext_like.config.cli import main

sys.exit(main())
