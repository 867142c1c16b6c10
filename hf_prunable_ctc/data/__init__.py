"""Data: audio decoding, log-mel features, transcripts, CTC vocabulary, dataset preparation, collator, augmentation."""
