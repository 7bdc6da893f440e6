"""Infrastructure shared by training, evaluation and export."""
