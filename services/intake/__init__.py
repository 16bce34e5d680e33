"""intake: the only door into tsunagu."""
