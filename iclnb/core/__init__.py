"""What every other part of iclnb leans on: the error type, array conversion, seeded random streams, progress bars,
layer spellings and where results live."""
