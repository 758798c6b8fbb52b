"""Folders of photos and clips: the ``cartoonize-batch`` command and its two engines."""
