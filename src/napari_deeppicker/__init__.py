"""napari-deeppicker: DeepPicker particle picking for cryo-EM micrographs (napari plugin + CLI)."""

__version__ = "0.1.0"
