"""Methods that need the model beyond one forward pass: the edit engine of leave-one-out influence (delete a word
or insert one, any measure of per-node sums, every layer from shared passes)."""
