"""Plumbing for the segmentation course notebooks: configuration, downloads, datasets,
shared model blocks, metrics and visualisation. The lessons themselves live in notebooks/."""
