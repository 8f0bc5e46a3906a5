"""``python -m napari_deeppicker`` runs the ``deeppicker`` command line."""

from napari_deeppicker.cli import main

raise SystemExit(main())
