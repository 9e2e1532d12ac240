"""What every other part of iclnb leans on: the error type, array conversion, seeded random streams, progress bars,
layer spellings, atomic file writes and where results live."""
