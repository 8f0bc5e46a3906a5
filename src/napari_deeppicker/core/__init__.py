"""The DeepPicker engine: pure Python (numpy, scipy, torch), no Qt or napari imports.

Submodules are imported on demand so that reading an MRC or a STAR file never loads torch.
"""
