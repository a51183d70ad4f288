"""`python -m charlstm ...`: the same as the `charlstm` command."""

import sys

from .cli import main

sys.exit(main())
