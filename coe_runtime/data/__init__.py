"""Everything read from files: the dialogue model, label sets, answer parsing, the dataset readers, the clue
file and the seed rationales."""
