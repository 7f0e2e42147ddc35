"""``python -m ghostfacenets.cli`` (what ``torchrun -m ghostfacenets.cli`` runs)."""

import sys

from . import main

sys.exit(main())
