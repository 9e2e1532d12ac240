"""Plotting shared by every experiment's figures: style (palette, confidence bands), graph drawing, saving (HTML and
PNG) and the interactive widgets. Each experiment family keeps its own figure builders in
``iclnb/experiments/<family>/figures.py``."""
