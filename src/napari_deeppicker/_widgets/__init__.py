"""The napari dock widgets: Pick (with edit and retrain), Train and Evaluate.

``_base`` holds what they share (worker lifecycle, Run / Stop, the session's models); the
``_jobs`` generators are the work handed to the workers; ``_parameters`` turns widget values
into core arguments.
"""
